"""Calibration on what reviews look like: the bias taken off each question's log-odds, measured at load.

A content-free input ("N/A", "无") guesses the model's lean before any review, but a review is not
content-free: on one checkpoint that guess moved plain complaints to 正面. Here the lean is read off
real reviews instead: the scorer runs CALIBRATION_REVIEWS (shipped with the code, so any checkpoint
recomputes its own bias at load in one batched forward) and an estimator below turns their raw
log-odds and labels into the bias. Every estimator is kept so the benches can report them side by side.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

# Reviews whose label is clear, half of each class: bench/dev_reviewed.tsv's "agree" items (hand-read dev
# reviews; the dev split is the only one read while writing prompts), the first CALIBRATION_PER_CLASS of
# each class in bench.data.dev() order among those of at most CALIBRATION_MAX_CHARS characters. Short, so
# their batched forward at load stays small; tests/test_sentiment_prompt.py checks they still come from dev.
CALIBRATION_PER_CLASS, CALIBRATION_MAX_CHARS = 16, 60
CALIBRATION_REVIEWS: tuple[tuple[str, str], ...] = (
    ('地理位置很好，在南湖旁边，透过房间的窗户就能看到南湖，很是写意。', "正面"),
    ('模具较差，指示灯有漏光的现象。 发热较大，电池持续时间一般。', "负面"),
    ('做工不错,比我的THINKPAD R61做工还好,配置性价比高,价格便宜,以前7000多元,现在4000多就买了', "正面"),
    ('换内存不是很方便，没有XP操作系统。', "负面"),
    ('机场接机路上就办好了入住手续；再次入住时提前做好了夜床，调热了室温，号称预前服务。', "正面"),
    ('3)入住花了差不多二十分钟,其实前台客人并不多,主要是工作人员明显是生手,而且态度还很生硬', "负面"),
    ('完美屏啊~还送包~~性价比很高！', "正面"),
    ('预定了书，但是没有拿到书，郁闷！', "负面"),
    ('硬盘通电6小时，完美屏。运气好啊~~~~~', "正面"),
    ('当当网中到底有没有这本书啊?????为什么要留下钱而不发书?????这这真让人扫兴!!!!!!', "负面"),
    ('我的家人都很喜欢，这本书买对了。呵呵，欢迎同好与我再交流，toryhellen@sina.com.', "正面"),
    ('除了主散热，其他的散热片不是铜的', "负面"),
    ('总体来说这次还是很满意的。', "正面"),
    ('3煲水的水煲都没洗干净还有黑黑的水垢都有，连倒水出来哪里都还是有。', "负面"),
    ('价格便宜，配置不错：T4200,GL40,SAMSUNG 1G (800)。', "正面"),
    ('早餐有时8点结束，刷卡不方便，还要压现金，房间打扫不及时', "负面"),
    ('对方很中意 因为竟然有 NHK', "正面"),
    ('6、屏幕效果似乎有问题（也许我还没有调节好对比度）', "负面"),
    ('3.性能强大,跑大型软件和游戏也得心应手.', "正面"),
    ('价格和房间严重不成比例的宾馆', "负面"),
    ('酒店房间很大，这是最大的优点。设施不是很新，楼道的空调太冷了，只能把房间的空调关掉。总体还是不错的', "正面"),
    ('4799买的，啥也没送，现在4599还送大礼包，感觉好亏', "负面"),
    ('LED屏幕各方面表现不错', "正面"),
    ('装机要改BIOS', "负面"),
    ('键盘：手感不错，大小也合适。', "正面"),
    ('房间空气非常差，一打开门一股非常大的烟味和霉味迎面扑来', "负面"),
    ('3、散热性好，手腕位置都不怎么热，风扇没转过。', "正面"),
    ('很烂的三星级，阴暗。睡个觉而已。马路对面的干锅还可以。', "负面"),
    ('驱动似乎没有想象中的难装。。。', "正面"),
    ('4,机身没有调音量的按钮.', "负面"),
    ('性价比很高，这种配置除了神舟的其他牌子很难做到~', "正面"),
    ('怎么没光盘,光盘竟然在第二本书里面!逼我一定要买两本,商业诈骗', "负面"),
)


def _column_split(log_odds: torch.Tensor, labels: Sequence[str], first: str) -> tuple[torch.Tensor, torch.Tensor]:
    is_first = torch.tensor([label == first for label in labels])
    return log_odds[is_first], log_odds[~is_first]


def mean_bias(log_odds: torch.Tensor, labels: Sequence[str], first: str) -> torch.Tensor:
    """The mean log-odds over the (balanced) sample: labels unused, the sample's balance is the prior."""
    return log_odds.mean(0)


def midpoint_bias(log_odds: torch.Tensor, labels: Sequence[str], first: str) -> torch.Tensor:
    """Halfway between the two classes' median log-odds: a typical review of either class sits as far
    on its own side; medians, so one odd review moves it little."""
    a, b = _column_split(log_odds, labels, first)
    return (a.quantile(0.5, dim=0) + b.quantile(0.5, dim=0)) / 2


def _threshold_bias(log_odds: torch.Tensor, labels: Sequence[str], first: str, key: Callable[[int, int], tuple]) -> torch.Tensor:
    """Per question: the middle of the run of cut points between sorted log-odds that minimises key(fp, fn)."""
    out = []
    for q in range(log_odds.shape[1]):
        values = sorted(zip(log_odds[:, q].tolist(), [label == first for label in labels]))
        xs = [v for v, _ in values]
        cuts = [xs[0] - 1.0] + [(a + b) / 2 for a, b in zip(xs, xs[1:])] + [xs[-1] + 1.0]
        scored = []
        for k in range(len(cuts)):  # cut k: the first k sorted items fall to the second label
            fn = sum(is_first for _, is_first in values[:k])
            fp = sum(not is_first for _, is_first in values[k:])
            scored.append(key(fp, fn))
        best = min(scored)
        chosen = [cut for cut, s in zip(cuts, scored) if s == best]
        out.append(chosen[len(chosen) // 2])
    return torch.tensor(out)


def equal_error_bias(log_odds: torch.Tensor, labels: Sequence[str], first: str) -> torch.Tensor:
    """The cut where the sample's errors split most evenly between the two directions, then fewest errors."""
    return _threshold_bias(log_odds, labels, first, lambda fp, fn: (abs(fp - fn), fp + fn))


def best_accuracy_bias(log_odds: torch.Tensor, labels: Sequence[str], first: str) -> torch.Tensor:
    """The cut with the fewest errors on the sample, then the most even split."""
    return _threshold_bias(log_odds, labels, first, lambda fp, fn: (fp + fn, abs(fp - fn)))


# name -> estimator(raw log-odds (reviews, questions), labels, LABELS[0]) -> bias per question.
ESTIMATORS: dict[str, Callable[[torch.Tensor, Sequence[str], str], torch.Tensor]] = {
    "dev_mean": mean_bias,
    "dev_midpoint": midpoint_bias,
    "dev_equal_error": equal_error_bias,
    "dev_best_accuracy": best_accuracy_bias,
}


def candidate_biases(scorer) -> dict[str, float]:
    """Every calibration for a SentimentScorer's layout, for the benches: none, content-free, and each
    estimator on the calibration reviews (one question: the bias is a number)."""
    reviews = scorer.prompt.calibration_reviews
    raw = scorer.calibration_log_odds
    if raw is None:
        raw = scorer.reviews_log_odds([text for text, _ in reviews])
    labels = [label for _, label in reviews]
    out = {"none": 0.0, "content_free": float(scorer.content_free_bias().mean())}
    return out | {name: float(f(raw, labels, scorer.labels[0]).mean()) for name, f in ESTIMATORS.items()}
