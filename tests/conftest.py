"""Shared fixtures: a tiny random Qwen2 model built once per run, and the real model when given."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pipeline
from pipeline.synthetic import build_model_dir


@pytest.fixture(autouse=True)
def _seeded_sampling():
    """The tiny model samples its replies: a fixed seed per test makes a reply independent of test order."""
    import torch

    torch.manual_seed(20261123)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised Qwen2ForCausalLM with a trained ChatML tokenizer, on disk."""
    return build_model_dir(tmp_path_factory.mktemp("tiny-model"), shape="tiny")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir) -> pipeline.Engine:
    """The real engine on the tiny model, loaded through the real loading code."""
    return pipeline.load_engine(tiny_model_dir, chat_max_new_tokens=24, history_token_budget=256,
                                max_input_tokens=128, threads=1)


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """REAL_MODEL_DIR (e.g. from ../shared/tools/get-real-model); tests using it skip without it."""
    value = os.environ.get("REAL_MODEL_DIR")
    if not value:
        pytest.skip("REAL_MODEL_DIR is not set: real-weights tests skipped")
    return Path(value)
