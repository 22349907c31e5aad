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
    after each token, so the short call waits for one decode step, not for the whole reply.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._short_waiting = 0
        self._paused = False  # a generation let short calls in and takes the model back before anyone long
        self.handovers = 0  # times a generation let short calls in (for tests and benches)

    @contextmanager
    def hold(self, short: bool = False) -> Iterator[None]:
        """Hold the model for the block; short calls go before long ones that wait."""
        with self._cond:
            if short:
                self._short_waiting += 1
                try:
                    while self._held:
                        self._cond.wait()
                finally:
                    self._short_waiting -= 1
            else:
                while self._held or self._short_waiting or self._paused:
                    self._cond.wait()
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()

    def let_short_calls_in(self) -> None:
        """From the holder, between two steps: if short calls wait, let them run, then take the model back."""
        with self._cond:
            if not self._short_waiting:
                return
            self.handovers += 1
            self._held, self._paused = False, True
            self._cond.notify_all()
            while self._held or self._short_waiting:
                self._cond.wait()
            self._held, self._paused = True, False
