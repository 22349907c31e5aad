"""Calibration on what reviews look like: the bias taken off each question's log-odds, per checkpoint.

A content-free input ("N/A", "无") guesses the model's lean before any review, but a review is not
content-free: on one checkpoint that guess moved plain complaints to 正面. Here the lean is read off
real reviews instead: the scorer runs CALIBRATION_REVIEWS (shipped with the code, so any checkpoint
computes its own bias) and an estimator below turns their raw log-odds and labels into the bias. A
steady estimate needs a few hundred reviews (about a minute of forwards on two cores), so the bias is
kept in a BiasCache keyed by the checkpoint and the prompt: the image computes it at build, a local
run at its first start. Every estimator is kept so the benches can report them side by side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

log = logging.getLogger(__name__)

# The whole dev split of bench/data.py (150 reviews of each class, their corpus labels): the only reviews
# read while writing prompts. All of it rather than a clear-read few: the mean over 300 moves by about
# 0.06 under resampling, over 32 by 0.16 (bench/README.md); tests/test_sentiment_prompt.py checks the file.
CALIBRATION_REVIEWS_TSV = Path(__file__).with_name("calibration_reviews.tsv")


def _read_reviews(path: Path) -> tuple[tuple[str, str], ...]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]  # after the "label<TAB>text" header
    return tuple((text, label) for label, text in (line.split("\t", 1) for line in lines if line))


CALIBRATION_REVIEWS: tuple[tuple[str, str], ...] = _read_reviews(CALIBRATION_REVIEWS_TSV)


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


CACHE_FILE = "sentiment-calibration.json"


def model_fingerprint(model) -> str:
    """A checkpoint's identity from its weights: every tensor's name, shape and 64 values spread over it.

    Read before the linear layers are packed (pipeline/packing.py), so it is the checkpoint's, not the kernels'.
    """
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.reshape(-1)
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(flat[::max(1, flat.numel() // 64)][:64].float().numpy().tobytes())
    return digest.hexdigest()


def user_cache_dir() -> Path:
    """Where a bias goes when the model folder is read-only (as in the image, run as uid 1000)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qwen-allinone"


class BiasCache:
    """Review-read biases already computed, by key (checkpoint, prompt, tokens, estimator), in a JSON file:
    the model folder's CACHE_FILE first, else one in the user's cache folder."""

    def __init__(self, model_dir: str | Path, fingerprint: str):
        self.fingerprint = fingerprint
        model_dir = Path(model_dir)
        self.paths = (model_dir / CACHE_FILE, user_cache_dir() / f"{model_dir.name}-{CACHE_FILE}")

    def key(self, *parts) -> str:
        """Everything the bias depends on besides the fingerprint: token ids, labels, the estimator's name."""
        return hashlib.sha256(json.dumps([self.fingerprint, *parts], ensure_ascii=False).encode()).hexdigest()

    def get(self, key: str) -> tuple[list[float], Path] | None:
        """(bias, the file it came from), or None."""
        for path in self.paths:
            try:
                return [float(b) for b in json.loads(path.read_text(encoding="utf-8"))[key]["bias"]], path
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return None

    def put(self, key: str, entry: dict) -> Path | None:
        """Add the entry to the first file that can be written (atomically); the path, or None."""
        for path in self.paths:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    entries = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    entries = {}
                entries = (entries if isinstance(entries, dict) else {}) | {key: entry}
                partial = path.with_name(f".{path.name}.{os.getpid()}")
                partial.write_text(json.dumps(entries, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
                os.replace(partial, path)
                return path
            except OSError as error:
                log.debug("calibration cache %s not written: %s", path, error)
        return None


def main(argv: Sequence[str] | None = None) -> None:
    """Compute and keep this checkpoint's sentiment bias (the image's build runs this), printing where."""
    import argparse

    from .engine import load_engine

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    engine = load_engine(args.model_dir)
    print(f"{engine.settings.sentiment_prompt.calibration} bias {engine.sentiment.bias.tolist()} "
          f"({engine.sentiment.bias_source})")


if __name__ == "__main__":
    main()
