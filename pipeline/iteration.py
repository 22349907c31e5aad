"""Driving the generators that report progress (a reply's pieces, a batch's slices)."""

from __future__ import annotations

from collections import deque
from typing import Iterable, TypeVar

T = TypeVar("T")


def last(steps: Iterable[T]) -> T:
    """Run steps to their end; the last value (ValueError if there was none)."""
    tail = deque(steps, maxlen=1)
    if not tail:
        raise ValueError("no steps")
    return tail[0]
