"""The review-read calibration: what it computes, and the cache that keeps it per checkpoint and prompt."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch

from pipeline import LABELS
from pipeline.calibration import CACHE_FILE, CALIBRATION_REVIEWS, BiasCache, mean_bias, model_fingerprint
from pipeline.sentiment import SentimentScorer


def few_reviews(engine, **changes):
    """The engine's prompt on a dozen shipped reviews, so a test calibrates in a moment."""
    return dataclasses.replace(engine.sentiment.prompt, calibration_reviews=CALIBRATION_REVIEWS[:12], **changes)


def test_the_engine_is_calibrated_with_the_mean_over_the_shipped_reviews(tiny_engine):
    scorer = tiny_engine.sentiment
    assert scorer.prompt.calibration == "dev_mean" and scorer.prompt.calibration_reviews == CALIBRATION_REVIEWS
    raw = scorer.reviews_log_odds([text for text, _ in CALIBRATION_REVIEWS])
    assert raw.shape == (len(CALIBRATION_REVIEWS), len(scorer.prompt.questions))
    expected = mean_bias(raw, [label for _, label in CALIBRATION_REVIEWS], LABELS[0])
    assert torch.allclose(scorer.bias, expected, atol=1e-4) and scorer.bias.abs().sum() > 0
    assert not torch.allclose(scorer.bias, scorer.content_free_bias(), atol=1e-3)  # not the content-free guess


def test_batched_calibration_equals_each_review_alone(tiny_engine):
    scorer = tiny_engine.sentiment
    texts = [text for text, _ in CALIBRATION_REVIEWS[:40]]
    alone = torch.stack([scorer.question_log_odds(tiny_engine.review_ids(text)) for text in texts])
    for rows in (1, 7, 16):  # length-sorted chunks, each padded to its longest
        together = scorer.ids_log_odds([tiny_engine.review_ids(text) for text in texts], rows=rows)
        assert torch.allclose(together, alone, atol=1e-4)


def test_a_bias_is_computed_once_then_read_from_the_model_folder(tiny_engine, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    cache = BiasCache(model_dir, model_fingerprint(tiny_engine.model))
    first = SentimentScorer(tiny_engine.model, tiny_engine.tokenizer, few_reviews(tiny_engine), cache=cache)
    assert first.calibration_log_odds is not None and first.bias_source.startswith("computed over 12 reviews")
    assert str(model_dir / CACHE_FILE) in first.bias_source
    [entry] = json.loads((model_dir / CACHE_FILE).read_text()).values()
    assert entry["bias"] == pytest.approx(first.bias.tolist()) and entry["estimator"] == "dev_mean"
    second = SentimentScorer(tiny_engine.model, tiny_engine.tokenizer, few_reviews(tiny_engine), cache=cache)
    assert second.calibration_log_odds is None  # no forward over the reviews this time
    assert second.bias_source == f"read from {model_dir / CACHE_FILE}"
    assert torch.equal(second.bias, first.bias)


@pytest.mark.parametrize("change", ["system prompt", "estimator", "estimator's code", "reviews", "checkpoint"])
def test_anything_the_bias_depends_on_calibrates_again(tiny_engine, tmp_path, monkeypatch, change):
    cache = BiasCache(tmp_path, model_fingerprint(tiny_engine.model))
    SentimentScorer(tiny_engine.model, tiny_engine.tokenizer, few_reviews(tiny_engine), cache=cache)
    prompt = few_reviews(tiny_engine)
    if change == "system prompt":
        prompt = dataclasses.replace(prompt, system="你只输出正面或负面。")
    elif change == "estimator":
        prompt = dataclasses.replace(prompt, calibration="dev_midpoint")
    elif change == "estimator's code":
        from pipeline import calibration

        monkeypatch.setitem(calibration.ESTIMATORS, "dev_mean", lambda log_odds, labels, first: log_odds.median(0).values)
    elif change == "reviews":
        prompt = dataclasses.replace(prompt, calibration_reviews=CALIBRATION_REVIEWS[2:14])
    else:
        cache = BiasCache(tmp_path, "another checkpoint")
    again = SentimentScorer(tiny_engine.model, tiny_engine.tokenizer, prompt, cache=cache)
    assert again.bias_source.startswith("computed")
    assert len(json.loads((tmp_path / CACHE_FILE).read_text())) == 2  # both kept


def test_a_folder_that_cannot_be_written_falls_back_to_the_user_cache(tiny_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    model_dir = tmp_path / "weights" / "some-model"
    (model_dir / CACHE_FILE).mkdir(parents=True)  # neither readable nor writable as a file (root ignores modes)
    cache = BiasCache(model_dir, model_fingerprint(tiny_engine.model))
    first = SentimentScorer(tiny_engine.model, tiny_engine.tokenizer, few_reviews(tiny_engine), cache=cache)
    kept = tmp_path / "xdg" / "qwen-allinone" / f"some-model-{CACHE_FILE}"
    assert first.bias_source.endswith(f"kept in {kept}") and kept.is_file()
    second = SentimentScorer(tiny_engine.model, tiny_engine.tokenizer, few_reviews(tiny_engine), cache=cache)
    assert second.bias_source == f"read from {kept}" and torch.equal(second.bias, first.bias)


@pytest.mark.parametrize("damage", ["not json", "a list", "bias not numbers"])
def test_a_damaged_cache_file_is_recomputed_and_rewritten(tiny_engine, tmp_path, damage):
    cache = BiasCache(tmp_path, model_fingerprint(tiny_engine.model))
    clean = SentimentScorer(tiny_engine.model, tiny_engine.tokenizer, few_reviews(tiny_engine), cache=cache)
    path = tmp_path / CACHE_FILE
    entries = json.loads(path.read_text())
    path.write_text({"not json": "{oops", "a list": "[1, 2]"}.get(damage) or json.dumps({k: {"bias": "x"} for k in entries}))
    scorer = SentimentScorer(tiny_engine.model, tiny_engine.tokenizer, few_reviews(tiny_engine), cache=cache)
    assert scorer.bias_source.startswith("computed") and torch.allclose(scorer.bias, clean.bias)
    assert json.loads(path.read_text()).keys() == entries.keys()  # rewritten whole
    assert cache.get(next(iter(entries)))[0] == pytest.approx(clean.bias.tolist())


def test_the_fingerprint_follows_the_weights_not_their_packing(tiny_engine, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    before = model_fingerprint(model)
    # The engine packed its linear layers after reading it (build and run may pack differently).
    assert tiny_engine.packed_linears > 0 and tiny_engine.bias_cache.fingerprint == before
    with torch.no_grad():
        model.base_model.norm.weight.mul_(1.01)  # what any fine-tune of the last layer does
    assert model_fingerprint(model) != before


def test_the_engine_keeps_its_bias_beside_the_weights_and_reads_it_next_time(tiny_model_dir, caplog):
    import pipeline

    from tests.conftest import TINY_SETTINGS

    (tiny_model_dir / CACHE_FILE).unlink(missing_ok=True)  # as a fresh folder has it
    with caplog.at_level(logging.INFO, logger="pipeline.engine"):
        first = pipeline.load_engine(tiny_model_dir, **TINY_SETTINGS)
        second = pipeline.load_engine(tiny_model_dir, **TINY_SETTINGS)
    assert first.sentiment.bias_source.endswith(f"kept in {tiny_model_dir / CACHE_FILE}")
    assert second.sentiment.bias_source == f"read from {tiny_model_dir / CACHE_FILE}"
    assert torch.equal(first.sentiment.bias, second.sentiment.bias)
    assert f"({second.sentiment.bias_source})" in caplog.text  # the load log says where the bias came from
