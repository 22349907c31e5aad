"""Shared fixtures: a tiny random Qwen2 model built once per run, and the real model when given."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

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


# The tiny engine's settings: short replies and budgets keep the tests fast.
# Packed whatever a measurement would say (it does not pay on matrices this small), so the tests run the
# engine's usual kernels.
TINY_SETTINGS = dict(chat_max_new_tokens=24, history_token_budget=256, max_input_tokens=128, threads=1,
                     pack_weights=True)


@pytest.fixture(scope="session")
def tiny_engine_with(tiny_model_dir) -> Callable[..., pipeline.Engine]:
    """Engines on the tiny model, through the real loading code: TINY_SETTINGS with overrides, one per set."""
    engines: dict[tuple, pipeline.Engine] = {}

    def load(**overrides: Any) -> pipeline.Engine:
        key = tuple(sorted(overrides.items()))
        if key not in engines:
            engines[key] = pipeline.load_engine(tiny_model_dir, **{**TINY_SETTINGS, **overrides})
        return engines[key]

    return load


@pytest.fixture(scope="session")
def tiny_engine(tiny_engine_with) -> pipeline.Engine:
    """The real engine on the tiny model with TINY_SETTINGS."""
    return tiny_engine_with()


@pytest.fixture(scope="module")
def served_settings() -> dict[str, Any]:
    """ServerSettings overrides for `app`; a module overrides this fixture to set its own."""
    return {}


@pytest.fixture(scope="module")
def app(engine, served_settings):
    """The module's `engine` fixture served in-process (tests/served.py serve) for all its tests."""
    from tests.served import serve

    with serve(engine, **served_settings) as app:
        yield app


@pytest.fixture(scope="module")
def url(app) -> str:
    return app.local_url.rstrip("/")


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """REAL_MODEL_DIR (e.g. from ../shared/tools/get-real-model); tests using it skip without it."""
    value = os.environ.get("REAL_MODEL_DIR")
    if not value:
        pytest.skip("REAL_MODEL_DIR is not set: real-weights tests skipped")
    return Path(value)
