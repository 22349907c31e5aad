"""Many reviews at once: each checked alone, then read in slices of similar length, one forward per slice."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterator, Sequence

from .errors import UserInputError
from .messages import refusal
from .request import json_type
from .routing import Mode
from .sentiment import Sentiment

# Padded review tokens one slice may hold (rows x longest row), on top of SENTIMENT_BATCH_SIZE rows. A slice
# is one forward, and a chat that arrives during a batch waits for the slice running: a cap in tokens bounds
# that wait, while rows of long reviews still make a forward of hundreds of tokens, where the matmuls run
# near their peak (bench.batch; the slice times are in bench/README.md).
SLICE_TOKENS = 512


@dataclass
class BatchProgress:
    """Where a batch stands: results in input order (None until read), how many are done, the last slice."""

    total: int
    results: list[Sentiment | UserInputError | None]
    done: int = 0
    slices: int = 0
    slice_ms: list[float] = field(default_factory=list)

    @property
    def refused(self) -> int:
        """Texts refused by the checks (empty, too long, not text)."""
        return sum(isinstance(r, UserInputError) for r in self.results)


def plan_slices(lengths: Sequence[int], batch_size: int, slice_tokens: int = SLICE_TOKENS) -> list[list[int]]:
    """Indices grouped into slices of similar length: at most batch_size rows and slice_tokens padded tokens each.

    Sorting by length keeps the padding (work done for nothing) small; the caller restores the order.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    slices: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[i]  # the longest so far, since the order is ascending
        if current and (len(current) >= batch_size or (len(current) + 1) * width > slice_tokens):
            slices.append(current)
            current = []
        current.append(i)
    if current:
        slices.append(current)
    return slices


def classify_many(engine, texts: Sequence[object], batch_size: int | None = None,
                  turn: Callable[[], ContextManager] | None = None) -> Iterator[BatchProgress]:
    """Label every text: a generator of the progress after the checks and after each slice.

    Texts that are not a list, too many texts, or none, are refused at once (UserInputError). Each text is checked like one
    /api/infer text (mode emotion, no tags): a refused one gets its UserInputError in its place and
    the others go on. turn() (the gate's, for the service) is entered around each slice, so other
    requests can have the model between two slices; closing the generator stops the batch there.
    """
    if not isinstance(texts, (list, tuple)):
        raise refusal("texts_not_list", type=json_type(texts))
    limit = engine.settings.batch_max_texts
    if len(texts) > limit:
        raise refusal("too_many_texts", count=len(texts), limit=limit)
    if not texts:
        raise refusal("no_texts")
    return _run(engine, texts, batch_size or engine.settings.sentiment_batch_size, turn or contextlib.nullcontext)


def _run(engine, texts: Sequence[object], batch_size: int, turn: Callable[[], ContextManager]) -> Iterator[BatchProgress]:
    progress = BatchProgress(total=len(texts), results=[None] * len(texts))
    ids: dict[int, Sequence[int]] = {}
    for i, text in enumerate(texts):
        try:
            ids[i] = engine.prepare(text, mode=Mode.EMOTION, tags=False).review_ids
        except UserInputError as exc:
            progress.results[i] = exc
            progress.done += 1
    yield progress
    indices = list(ids)
    for part in plan_slices([len(ids[i]) for i in indices], batch_size):
        members = [indices[k] for k in part]
        with turn():
            started = time.perf_counter()
            labels = engine.classify_batch([ids[i] for i in members])
        progress.slice_ms.append((time.perf_counter() - started) * 1000)
        for i, sentiment in zip(members, labels):
            progress.results[i] = sentiment
        progress.done += len(members)
        progress.slices += 1
        yield progress
