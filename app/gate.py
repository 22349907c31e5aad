"""Who gets the model when: one bounded line shared by every door (app.service runs requests through it).

A job is admitted once ("busy, try again" when the line, or its client's share of it, is full), then takes
turns on the model: labels first but not without bound, replies in order, batch slices when no one asks.
No Gradio here.
"""

from __future__ import annotations

import itertools
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from pipeline import UserInputError
from pipeline.messages import REFUSALS, refusal

BUSY_MESSAGE = REFUSALS["busy"].en


class Busy(UserInputError):
    """Too many jobs already wait for the model: a refusal like any other, so every door says it its usual way."""

    def __init__(self) -> None:
        busy = refusal("busy")
        super().__init__(str(busy), busy.chinese, busy.key)


class Cancelled(Exception):
    """The job was cancelled (Stop, Clear, or its client went away)."""


class Job:
    """One request's claim on the model: cancelling it leaves the line (or the model) and ends its stream.

    client names who sent it (client_key.py: "session:<id>" for a page tab, "ip:<address>" for the
    APIs): the gate lets one client have at most max_per_client jobs waiting. None: counted for no one.
    """

    def __init__(self, client: str | None = None) -> None:
        self.client = client
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._stream = None
        self._listeners: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        """Whether cancel() was called."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop the job: leave the gate, and end its chat stream at the next token; safe to call twice."""
        with self._lock:
            self._cancelled.set()
            stream, listeners = self._stream, list(self._listeners)
        if stream is not None:
            stream.cancel()
        for listener in listeners:
            listener()

    def attach(self, stream):
        """Make stream the one cancel() stops; returns it (already cancelled if the job is)."""
        with self._lock:
            self._stream = stream
        if self.cancelled:
            stream.cancel()
        return stream

    def on_cancel(self, listener: Callable[[], None]) -> None:
        """Call listener (from the cancelling thread) when the job is cancelled; at once if it already is."""
        with self._lock:
            self._listeners.append(listener)
            cancelled = self.cancelled
        if cancelled:
            listener()


# Kinds of turn, in the order they go when several ask: a label, a reply, a slice of a batch.
QUICK, REPLY, BATCH = 0, 1, 2
DUE = -1  # the rank of a reply that labels have passed enough times: it goes before them

# Measured with bench/flood.py (8 clients sending labels without pause, one chat): see the README's table.
# A reply waiting to start lets at most this many labels take the model before it...
MAX_LABEL_PASSES = 4
# ...or labels that held the model this long in all (long reviews take longer to read).
MAX_LABEL_PASS_MS = 1000.0
# Jobs one client (a page tab, an API client's address) may have waiting; more are told busy.
MAX_PER_CLIENT = 4


class ModelGate:
    """The model's one line: bounded admission, then turns on the model.

    A job is admitted once (Busy when max_waiting jobs already wait, or when max_per_client jobs of its
    client already wait) and may then take several turns on the model (a label, then a reply; or a
    batch's slices). Quick turns (a label, a few hundred ms) go one at a time, in admission order, and
    do not wait for a reply that is streaming: the engine lets them in between two of its tokens
    (pipeline.model_lock). Replies go one at a time, in admission order, after the quick turns that
    ask, but that fast lane is bounded: from the moment a reply asks until its first token (started()),
    every label that takes the model while no other reply streams passes it, and once max_label_passes
    labels passed it, or those labels held the model max_label_pass_ms in all, the reply is due: it
    goes before every label, and labels stay out until its first token, so they cannot overtake its
    prefill at the engine's lock either (None: labels always go first, without bound). A reply waiting
    behind a streaming reply is not passed by the labels that run between that reply's tokens. A batch
    slice (one forward of a few reviews) goes only when no one else asks, so a label or a reply waits
    behind a batch for one slice at most; a steady flood of labels and replies keeps a batch waiting.
    A cancelled job leaves at once, even while it holds the model: the engine's own lock makes the next
    job wait for the cancelled one's last token, so no one waits for a client that is gone.
    """

    def __init__(self, max_waiting: int, max_label_passes: int | None = MAX_LABEL_PASSES,
                 max_label_pass_ms: float | None = MAX_LABEL_PASS_MS, max_per_client: int | None = MAX_PER_CLIENT,
                 clock: Callable[[], float] = time.monotonic):
        for name, value, least in (("max_waiting", max_waiting, 1), ("max_label_passes", max_label_passes, 0),
                                   ("max_label_pass_ms", max_label_pass_ms, 0), ("max_per_client", max_per_client, 1)):
            if value is not None and value < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")
        self.max_waiting = max_waiting
        self.max_label_passes = max_label_passes
        self.max_label_pass_ms = max_label_pass_ms
        self.max_per_client = max_per_client
        self._clock = clock
        self._cond = threading.Condition()
        self._admitted: dict[Job, int] = {}  # job -> admission number, until it leaves
        self._asking: dict[Job, int] = {}  # job -> kind of turn, while it waits for one
        self._holders: dict[Job, int] = {}  # job -> kind, while it has its turn (a label beside a reply at most)
        self._numbers = itertools.count()
        self._passed: dict[Job, list[float]] = {}  # reply -> [labels, their ms] from asking to its first token
        self._passing: dict[Job, tuple[float, list[Job]]] = {}  # label holding -> (since, the replies it passes)
        self._due: set[Job] = set()  # replies passed enough: they go before labels until their first token
        self.label_passes = 0  # labels that passed a waiting reply, in all (for tests and benches)

    @property
    def waiting(self) -> int:
        """Admitted jobs that do not hold the model."""
        with self._cond:
            return len(self._admitted) - len(self._holders)

    @property
    def busy(self) -> bool:
        """Whether a job holds the model."""
        with self._cond:
            return bool(self._holders)

    @property
    def labels_asking(self) -> int:
        """Jobs waiting for a label's turn."""
        with self._cond:
            return sum(kind == QUICK for kind in self._asking.values())

    def ahead_of(self, job: Job) -> int | None:
        """How many turns come before this job's (None if it is not asking)."""
        with self._cond:
            return self._ahead(job) if job in self._asking else None

    def passes(self, job: Job) -> int | None:
        """How many labels passed this reply since it asked (None if it is not waiting to start)."""
        with self._cond:
            passed = self._passed.get(job)
            return None if passed is None else int(passed[0])

    def admit(self, job: Job) -> None:
        """Put job in line; Busy if max_waiting jobs already wait, or max_per_client jobs of job.client."""
        with self._cond:
            if job in self._admitted:
                return
            if len(self._admitted) - len(self._holders) >= self.max_waiting:
                raise Busy()
            if job.client is not None and self.max_per_client is not None:
                mine = sum(other.client == job.client for other in self._admitted if other not in self._holders)
                if mine >= self.max_per_client:
                    raise Busy()
            self._admitted[job] = next(self._numbers)
        job.on_cancel(lambda: self.leave(job))

    def leave(self, job: Job) -> None:
        """Take job out of line and off the model, if it is there."""
        with self._cond:
            self._admitted.pop(job, None)
            self._asking.pop(job, None)
            self._end_turn(job)
            self._cond.notify_all()

    def started(self, job: Job) -> None:
        """Tell the gate that job's reply has its first token: labels may run between its tokens again."""
        with self._cond:
            if self._passed.pop(job, None) is not None:
                self._due.discard(job)
                self._cond.notify_all()

    @contextmanager
    def turn(self, job: Job, quick: bool = False, batch: bool = False) -> Iterator[None]:
        """Wait for job's turn, hold the model for the block, then hand it on; Cancelled if cancelled first."""
        for _ in self.wait_for_turn(job, quick, batch):
            pass
        try:
            yield
        finally:
            self.release(job)

    def wait_for_turn(self, job: Job, quick: bool = False, batch: bool = False) -> Iterator[int]:
        """Wait until job holds its turn (a label's if quick, a batch slice's if batch, else a reply's),
        yielding how many turns come first whenever that changes.

        When the generator ends, job holds the model until release(job) (a reply: and counts as waiting
        to start until started(job)); Cancelled if cancelled first.
        """
        with self._cond:
            if job not in self._admitted:
                if job.cancelled:
                    raise Cancelled("cancelled while waiting for the model")
                raise ValueError("admit the job before its turn")
            kind = QUICK if quick else BATCH if batch else REPLY
            self._asking[job] = kind
            if kind == REPLY and job not in self._passed:
                self._passed[job] = [0, 0.0]
                self._check_due(job)
            self._cond.notify_all()  # the others' count of turns ahead may have changed
        told = None
        try:
            while True:
                with self._cond:
                    while not job.cancelled:
                        if self._may_take(job):
                            del self._asking[job]
                            self._holders[job] = kind
                            if kind == QUICK:
                                self._pass(job)
                            return
                        ahead = self._ahead(job)
                        if ahead != told:
                            break
                        self._cond.wait()
                    else:
                        raise Cancelled("cancelled while waiting for the model")
                told = ahead
                yield ahead
        finally:
            with self._cond:
                self._asking.pop(job, None)

    def release(self, job: Job) -> None:
        """End job's turn (it stays admitted for its next one)."""
        with self._cond:
            if job in self._holders:
                self._end_turn(job)
                self._cond.notify_all()

    def _end_turn(self, job: Job) -> None:
        self._holders.pop(job, None)
        self._passed.pop(job, None)
        self._due.discard(job)
        since, passed = self._passing.pop(job, (None, []))
        for reply in passed:
            if reply in self._passed:
                self._passed[reply][1] += (self._clock() - since) * 1000
                self._check_due(reply)

    def _pass(self, label: Job) -> None:
        """The label took the model: it passes every reply waiting to start, unless a reply streams."""
        streaming = any(kind == REPLY and holder not in self._passed for holder, kind in self._holders.items())
        passed = [] if streaming else list(self._passed)
        self._passing[label] = (self._clock(), passed)
        for reply in passed:
            self._passed[reply][0] += 1
            self.label_passes += 1
            self._check_due(reply)
        if passed:
            self._cond.notify_all()  # a reply may be due now: the turns ahead change

    def _check_due(self, reply: Job) -> None:
        labels, ms = self._passed[reply]
        if ((self.max_label_passes is not None and labels >= self.max_label_passes)
                or (self.max_label_pass_ms is not None and ms >= self.max_label_pass_ms)):
            self._due.add(reply)

    def _may_take(self, job: Job) -> bool:
        return not self._ahead_asking(job) and not any(self._blocks(holder, self._asking[job])
                                                       for holder in self._holders)

    def _blocks(self, holder: Job, asker: int) -> bool:
        """Whether holder's turn keeps one of kind asker waiting (a reply lets labels in, once it is not due)."""
        return not (self._holders[holder] == REPLY and asker == QUICK and holder not in self._due)

    def _ahead(self, job: Job) -> int:
        holders = sum(self._blocks(holder, self._asking[job]) for holder in self._holders)
        return self._ahead_asking(job) + holders

    def _ahead_asking(self, job: Job) -> int:
        return sum(self._before(other, job) for other in self._asking)

    def _rank(self, job: Job) -> int:
        """QUICK, REPLY or BATCH; DUE for a due reply that only labels keep from the model (no reply or batch holds it)."""
        kind = self._asking[job]
        if kind == REPLY and job in self._due and all(k == QUICK for k in self._holders.values()):
            return DUE
        return kind

    def _before(self, other: Job, job: Job) -> bool:
        """Whether other (asking) goes before job (asking): by rank (DUE, QUICK, REPLY, BATCH), then admission order."""
        if other is job:
            return False
        return (self._rank(other), self._admitted[other]) < (self._rank(job), self._admitted[job])
