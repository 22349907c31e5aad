"""Smoke test of the benchmarks' core functions on the tiny model (structure only, no timings judged).

The benchmarks themselves are run by hand (`python -m bench.<name>`); nothing here measures speed.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("snownlp")

import pipeline  # noqa: E402
from bench import chat, data, injection, machine, report, sentiment  # noqa: E402
from bench.methods import METHODS, UNPARSED, parse_seed  # noqa: E402


@pytest.fixture(scope="module")
def limits(tiny_engine):
    cost = machine.model_cost(tiny_engine.model)
    return {"matmul": machine.measure_matmul(cost.hidden, cost.intermediate, tokens=(1, 8), min_seconds=0.0, max_reps=3),
            "bandwidth": machine.measure_bandwidth(gib=0.01, reps=2)}


def test_seed_parsing():
    assert parse_seed("正面") == "正面"
    assert parse_seed("这是负面的") == "负面"
    assert parse_seed("neutral") == UNPARSED


def test_model_cost_counts_every_parameter_once(tiny_engine, tiny_model_dir):
    stock = pipeline.load_engine(tiny_model_dir, threads=1, pack_weights=False).model
    cost = machine.model_cost(stock)
    unique = {p.data_ptr(): p.numel() for p in stock.parameters()}
    assert cost.params_total == sum(unique.values())
    assert cost.params_embedding + cost.params_lm_head + cost.params_layers_linear + cost.params_other == cost.params_total
    assert cost.forward_flops(4, past=10) > cost.forward_flops(4, past=0) > 0
    assert machine.model_cost(tiny_engine.model) == cost  # packed layers count as the same weights


def test_sentiment_run_and_summary(tiny_engine, limits, tmp_path):
    items = [(text[:30], label) for text, label in data.heldout(4)]  # the tiny engine takes 128 tokens at most
    assert len(items) == 4
    rows = sentiment.run_items(tiny_engine, items, list(METHODS), sentiment.Deadline(300), progress=False)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    out = sentiment.summarise(rows, list(METHODS), tiny_engine, limits, {0: {"verdict": "agree", "sha": rows[0]["key"]}})
    for m in METHODS:
        metrics = out["methods"][m]["metrics"]
        assert metrics["n"] == 4 and 0 <= metrics["accuracy"] <= 1
        assert set(metrics["confusion"]) == {"正面", "负面"}
        assert out["methods"][m]["latency_ms"]["n"] == 4
    assert out["floor"]["floor_ms"]["median"] > 0
    assert out["reviewed"]["agree_n"] == 1
    json.dumps(out, ensure_ascii=False)


def test_variants_run_on_their_engines(tiny_engine, tiny_model_dir, limits):
    from bench.methods import VARIANTS

    stock = pipeline.load_engine(tiny_model_dir, threads=1, max_input_tokens=128, pack_weights=False)
    calls = []
    for name in ("packed", "stock"):
        engine = {"packed": tiny_engine, "stock": stock}[name]
        original = engine.classify
        engine.classify = lambda text, _o=original, _n=name: calls.append(_n) or _o(text)
    try:
        items = [(text[:30], label) for text, label in data.heldout(2)]
        rows = sentiment.run_items(tiny_engine, items, list(VARIANTS), sentiment.Deadline(300), progress=False,
                                   stock_engine=stock)
    finally:
        del tiny_engine.classify, stock.classify
    # only the two "ours" variants call classify: per item, once on each engine
    assert [sorted(calls[i:i + 2]) for i in (0, 2)] == [["packed", "stock"]] * 2
    assert all(set(VARIANTS) <= set(r) for r in rows)
    out = sentiment.summarise(rows, list(VARIANTS), tiny_engine, limits)
    assert set(out["speedup"]["variants_over_ours_median"]) == set(VARIANTS) - {"ours"}


def test_profile_of_ours_adds_up(tiny_engine):
    texts = [text[:30] for text, _ in data.heldout(4)] + ["长" * 5000]  # the last is over the limit: skipped
    prof = sentiment.profile_ours(tiny_engine, texts)
    assert prof["texts"] == 4
    assert sum(prof["share_by_kind"].values()) == pytest.approx(1.0)
    assert prof["share_by_kind"] == pytest.approx(sentiment.profile_shares(prof["self_cpu_us"]))
    # the tiny model's time is mostly its linear layers and the ops around them, not "other"
    assert prof["share_by_kind"]["linear"] > prof["share_by_kind"]["other"]


@pytest.mark.parametrize("name, kind", [
    ("mkldnn::_linear_pointwise", "linear"), ("aten::linear", "linear"), ("aten::addmm", "linear"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"), ("aten::mul", "elementwise"),
    ("aten::silu", "elementwise"), ("aten::empty", "other"), ("aten::multinomial", "other")])
def test_op_kind(name, kind):
    assert sentiment.op_kind(name) == kind


def test_chat_paths(tiny_engine):
    r = chat.engine_run(tiny_engine, 1, 4)
    assert r["prompt_tokens"] > 0 and 1 <= r["new_tokens"] <= 4
    b = chat.bare_run(tiny_engine, 1, 3)
    assert b["step_ms"]["n"] == 2


def test_report_table_from_results(tiny_engine, limits, tmp_path):
    items = [(text[:30], label) for text, label in data.heldout(2)]
    rows = sentiment.run_items(tiny_engine, items, ["ours", "seed"], sentiment.Deadline(300), progress=False)
    result = {"bench": "sentiment", "provenance": {"model": {"tag": "tiny-random", "kind": "random"}},
              "split": {"items_run": 2, "heldout_n": 2}, "accuracy_meaningless": "random", "limits": limits,
              "cost": machine.model_cost(tiny_engine.model).as_dict(),
              **sentiment.summarise(rows, ["ours", "seed"], tiny_engine, limits), "items": rows}
    (tmp_path / "sentiment-n2-tiny-random.json").write_text(json.dumps(result, ensure_ascii=False))
    text = report.table(report.load_results(tmp_path))
    assert "Sentiment latency, median" in text and "its FLOP floor" in text
    readme = tmp_path / "README.md"
    report.write_readme(readme, text)
    report.write_readme(readme, text)
    assert readme.read_text().count(report.START) == 1


def test_prompt_robust_margins_decide_as_classify_does(tiny_engine):
    from bench import prompt_robust

    texts = [text[:30] for text, _ in data.dev(4)]
    scorer = tiny_engine.sentiment
    for text, margin in zip(texts, prompt_robust.margins(tiny_engine, scorer, texts)):
        assert prompt_robust.decide(margin, scorer.bias.tolist()) == tiny_engine.classify(text).label
    assert prompt_robust.decide([1.0, -3.0], [0.0, -3.5]) == "正面"  # mean of calibrated log-odds: (1 + 0.5) / 2
    assert prompt_robust.decide([1.0, -3.0], [0.0, 0.0]) == "负面"
    bases = prompt_robust.attack_bases(6)
    assert [label for _, label in bases].count("正面") == 3 and all(len(t) <= 150 for t, _ in bases)


@pytest.mark.parametrize("placement, expected", [
    ("before", "XX好。很差。"), ("after", "好。很差。XX"), ("middle", "好。XX很差。"),
])
def test_injection_places_the_attack(placement, expected):
    assert injection.insert("好。很差。", placement, "XX") == expected


def test_injection_attacks_push_to_the_other_label_in_every_family():
    attacks = injection.attacked("质量很差。", "负面")
    assert {family for family, _ in attacks} == set(injection.FAMILIES)
    assert all("负面" not in text.replace("质量很差。", "") for _, text in attacks)
    seen = injection.attacked("质量很差。", "负面", seen=True)
    assert seen and all(injection.FAMILIES[f][0] for f, _ in seen)
    assert len(seen) + len(injection.attacked("质量很差。", "负面", seen=False)) == len(attacks)


def test_injection_summary_counts_holds_among_clean_correct():
    def row(index, family, gold, ours):
        return {"index": index, "gold": gold, "family": family, "ours": {"label": ours}}
    rows = [row(0, "clean", "负面", "负面"), row(0, "ignore", "负面", "负面"), row(0, "before", "负面", "正面"),
            row(1, "clean", "正面", "负面"), row(1, "ignore", "正面", "正面"), row(1, "before", "正面", "负面")]
    s = injection.summarise(rows, ["ours"])["methods"]["ours"]
    assert s["attacked_clean_correct"] == 2 and s["holds"] == 0.5  # review 1 was wrong when clean: not counted
    assert (s["holds_seen"], s["holds_unseen"]) == (1.0, 0.0)
    assert s["holds_raw"] == 0.5 and s["clean_accuracy"] == 0.5


def test_calibration_error_bins():
    perfect = sentiment.calibration_error([0.75] * 4 + [1.0] * 2, [True, True, True, False, True, True])
    assert perfect["ece"] == pytest.approx(0.0)
    off = sentiment.calibration_error([0.95] * 4, [True, False, True, False])
    assert off["ece"] == pytest.approx(0.45) and off["bins"][0]["n"] == 4


def test_project_readme_headline_rows_are_the_reports():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split(report.SUMMARY_START)[1].split(report.SUMMARY_END)[0].strip()
    assert block == report.summary(report.load_results(root / "bench" / "results")).strip(), \
        "regenerate with: python -m bench.report"


@pytest.mark.parametrize("b, c, p", [(0, 0, 1.0), (5, 5, 1.0), (0, 10, 2 / 1024), (1, 9, 22 / 1024)])
def test_mcnemar_exact_p(b, c, p):
    assert report.mcnemar_exact_p(b, c) == pytest.approx(p)
    assert report.mcnemar_exact_p(c, b) == pytest.approx(p)


def test_paired_comparison_counts_each_item_once():
    def item(gold, ours, seed):
        return {"gold": gold, "ours": {"label": ours}, "seed": {"label": seed}}
    r = {"items": [item("正面", "正面", "负面"), item("正面", "正面", "正面"), item("负面", "正面", "负面"),
                   item("负面", "正面", "unparsed"), item("负面", "负面", "负面")]}
    pair = report.paired_comparison(r)
    assert (pair["ours_only"], pair["seed_only"], pair["both"], pair["neither"]) == (1, 1, 2, 1)
    assert pair["p"] == 1.0
    assert report.paired_comparison({"items": []}) is None


def test_dev_verdicts_match_the_dev_split():
    from bench import prompt_robust

    verdicts = prompt_robust.load_dev_verdicts()
    assert len(verdicts) == 120 and set(verdicts.values()) == {"agree", "mixed", "contradicts"}


def test_the_adopted_layout_is_the_one_measured_as_tagged_drop():
    import dataclasses

    from bench import prompt_robust
    from pipeline.prompts import SENTIMENT_PROMPT

    measured = prompt_robust.VARIANTS["tagged_drop"]
    assert dataclasses.replace(measured, uncertain_below=SENTIMENT_PROMPT.uncertain_below) == SENTIMENT_PROMPT
