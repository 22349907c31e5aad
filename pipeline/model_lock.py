"""The model's one forward at a time, where short calls cut in: a long generation lets them in between tokens."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class ModelLock:
    """A lock on the model with a fast lane.

    On two cores, two forwards at once are no faster than two in a row, so the model runs one at a
    time. A short call (a label, a few hundred ms) holds it with `hold(short=True)`: it goes before
    every long caller still waiting, and a generation holding the model calls `let_short_calls_in()`
    after each token, so the short call waits for one decode step, not for the whole reply. Each
    pause lets in the short calls that were waiting when it began, then the generation takes the
    model back before anyone else: a steady stream of labels slows a reply, it cannot stop it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._asked = 0  # short calls that ever asked; each one's ticket is its number
        self._finished = 0  # short calls that have had the model (or gave up asking)
        self._long_waiting = 0
        self._pause_until: int | None = None  # while a generation pauses: the tickets it lets in
        self.handovers = 0  # times a generation let short calls in (for tests and benches)

    @property
    def waiting(self) -> int:
        """Callers waiting for the model, short and long."""
        with self._cond:
            return self._asked - self._finished + self._long_waiting

    @contextmanager
    def hold(self, short: bool = False) -> Iterator[None]:
        """Hold the model for the block; short calls go before long ones that wait."""
        with self._cond:
            if short:
                ticket = self._asked
                self._asked += 1
                try:
                    while self._held or (self._pause_until is not None and ticket >= self._pause_until):
                        self._cond.wait()
                except BaseException:
                    self._finished += 1  # gave up: nobody waits for this ticket
                    self._cond.notify_all()
                    raise
            else:
                self._long_waiting += 1
                try:
                    while self._held or self._asked > self._finished or self._pause_until is not None:
                        self._cond.wait()
                finally:
                    self._long_waiting -= 1
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                if short:
                    self._finished += 1
                self._cond.notify_all()

    def let_short_calls_in(self) -> None:
        """From the holder, between two steps: if short calls wait, let them run, then take the model back."""
        with self._cond:
            if self._asked == self._finished:
                return
            self.handovers += 1
            self._pause_until = self._asked
            self._held = False
            self._cond.notify_all()
            while self._held or self._finished < self._pause_until:
                self._cond.wait()
            self._pause_until = None
            self._held = True
