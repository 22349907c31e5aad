"""Who gets the model when: one bounded line shared by every door, and the one way to run a request.

Every door (the page, the named Gradio API, the JSON API) prepares its request, then calls
ModelService.run(): admission ("busy, try again" when the line is full), the wait for the model,
the roles, and the release all happen there. No Gradio here.
"""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from pipeline import ChatStream, Request, Sentiment, UserInputError, batch
from pipeline.batch import BatchProgress
from pipeline.iteration import last
from pipeline.messages import REFUSALS, refusal
from pipeline.request import prepare, with_history

BUSY_MESSAGE = REFUSALS["busy"].en


class Busy(UserInputError):
    """Too many jobs already wait for the model: a refusal like any other, so every door says it its usual way."""

    def __init__(self) -> None:
        busy = refusal("busy")
        super().__init__(str(busy), busy.chinese, busy.key)


class Cancelled(Exception):
    """The job was cancelled (Stop, Clear, or its client went away)."""


class Job:
    """One request's claim on the model: cancelling it leaves the line (or the model) and ends its stream."""

    def __init__(self) -> None:
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


class ModelGate:
    """The model's one line: bounded admission, then turns on the model.

    A job is admitted once (Busy when max_waiting jobs already wait) and may then take several turns
    on the model (a label, then a reply; or a batch's slices). Quick turns (a label, a few hundred ms)
    go one at a time, in admission order, and do not wait for a reply that is running: the engine lets
    them in between two of its tokens (pipeline.model_lock). Replies go one at a time, after every
    quick turn that asks, in admission order. A batch slice (one forward of a few reviews) goes only when
    no one else asks, so a label or a reply waits behind a batch for one slice at most. A cancelled job
    leaves at once, even while it holds the model: the engine's own lock makes the next job wait for the
    cancelled one's last token, so no one waits for a client that is gone.
    """

    def __init__(self, max_waiting: int):
        if max_waiting < 1:
            raise ValueError(f"max_waiting must be at least 1, got {max_waiting}")
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._admitted: dict[Job, int] = {}  # job -> admission number, until it leaves
        self._asking: dict[Job, int] = {}  # job -> kind of turn, while it waits for one
        self._holders: dict[Job, int] = {}  # job -> kind, while it has its turn (a label beside a reply at most)
        self._numbers = itertools.count()

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

    def ahead_of(self, job: Job) -> int | None:
        """How many turns come before this job's (None if it is not asking)."""
        with self._cond:
            return self._ahead(job) if job in self._asking else None

    def admit(self, job: Job) -> None:
        """Put job in line; Busy if max_waiting jobs already wait."""
        with self._cond:
            if job in self._admitted:
                return
            if len(self._admitted) - len(self._holders) >= self.max_waiting:
                raise Busy()
            self._admitted[job] = next(self._numbers)
        job.on_cancel(lambda: self.leave(job))

    def leave(self, job: Job) -> None:
        """Take job out of line and off the model, if it is there."""
        with self._cond:
            self._admitted.pop(job, None)
            self._asking.pop(job, None)
            self._holders.pop(job, None)
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

        When the generator ends, job holds the model until release(job); Cancelled if cancelled first.
        """
        with self._cond:
            if job not in self._admitted:
                if job.cancelled:
                    raise Cancelled("cancelled while waiting for the model")
                raise ValueError("admit the job before its turn")
            kind = QUICK if quick else BATCH if batch else REPLY
            self._asking[job] = kind
            self._cond.notify_all()  # the others' count of turns ahead may have changed
        told = None
        try:
            while True:
                with self._cond:
                    while not job.cancelled:
                        if self._may_take(job):
                            del self._asking[job]
                            self._holders[job] = kind
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
            if self._holders.pop(job, None) is not None:
                self._cond.notify_all()

    def _may_take(self, job: Job) -> bool:
        return not self._ahead_asking(job) and not any(self._blocks(kind, self._asking[job])
                                                       for kind in self._holders.values())

    @staticmethod
    def _blocks(holder: int, asker: int) -> bool:
        """Whether a turn of kind holder keeps one of kind asker waiting (a reply lets labels in)."""
        return not (holder == REPLY and asker == QUICK)

    def _ahead(self, job: Job) -> int:
        holders = sum(self._blocks(kind, self._asking[job]) for kind in self._holders.values())
        return self._ahead_asking(job) + holders

    def _ahead_asking(self, job: Job) -> int:
        return sum(self._before(other, job) for other in self._asking)

    def _before(self, other: Job, job: Job) -> bool:
        """Whether other (asking) goes before job (asking): by kind (QUICK, REPLY, BATCH), then admission order."""
        if other is job:
            return False
        return (self._asking[other], self._admitted[other]) < (self._asking[job], self._admitted[job])


@dataclass
class Answer:
    """What a request got so far: its label (sentiment role) and its reply stream (chat role)."""

    sentiment: Sentiment | None = None
    stream: ChatStream | None = None
    ahead: int | None = None  # while waiting for the model: how many turns come first
    waiting_for: str | None = None  # while waiting: "label" or "reply"

    @property
    def model_ms(self) -> float | None:
        """The model's time for both roles, in milliseconds (None before any)."""
        parts = [self.sentiment and self.sentiment.latency_ms, self.stream and self.stream.latency_ms]
        parts = [p for p in parts if p is not None]
        return sum(parts) if parts else None


class ModelService:
    """The engine (None while loading) and the gate in front of it: what every door talks to."""

    def __init__(self, engine, max_waiting: int):
        self.engine = engine
        self.gate = ModelGate(max_waiting)

    def prepare(self, text: Any, history: Any = None, mode: Any = None, what: str = "text",
                tags: bool = True, system: str | None = None) -> Request:
        """The request checked and tokenized (see pipeline.request.prepare), or UserInputError; before any waiting."""
        return prepare(self._engine(), text, history, mode, what, tags, system)

    def with_history(self, request: Request, history: Any) -> Request:
        """The request after a newer history (its chat prompt rebuilt only if the history changed)."""
        return with_history(self._engine(), request, history)

    def _engine(self):
        if self.engine is None:
            raise refusal("loading")
        return self.engine

    def run(self, request: Request, job: Job,
            before_reply: Callable[[Request], Request] | None = None) -> Iterator[Answer]:
        """Admit the job (Busy now if the line is full), then a generator that runs the request's roles.

        It yields the Answer while it waits for the model (with `ahead` set, each time that changes),
        after the label, after each piece of the reply and once when the reply has ended; Cancelled if
        the job is cancelled first. before_reply (the page's) may wait and return the
        request with a newer history. Closing the generator or cancelling the job ends the generation
        and frees the model; either way the job leaves the line at the end.
        """
        self.gate.admit(job)
        return self._run(request, job, before_reply)

    def _run(self, request: Request, job: Job, before_reply) -> Iterator[Answer]:
        answer = Answer()
        try:
            if request.wants_label:
                yield from self._wait(job, answer, "label")
                try:
                    answer.sentiment = self.engine.classify(request)
                finally:
                    self.gate.release(job)
                yield answer
            if request.wants_reply:
                if before_reply is not None:
                    request = before_reply(request)
                yield from self._wait(job, answer, "reply")
                try:
                    answer.stream = job.attach(self.engine.chat(request))
                    with answer.stream:
                        for _ in answer.stream:
                            yield answer
                finally:
                    self.gate.release(job)
                if answer.stream.finish_reason == "cancelled":
                    raise Cancelled("cancelled while generating")
                yield answer
        finally:
            self.gate.leave(job)

    def _wait(self, job: Job, answer: Answer, role: str) -> Iterator[Answer]:
        """Yield the answer with the turns ahead while the job waits; it holds the model at the end."""
        try:
            for answer.ahead in self.gate.wait_for_turn(job, quick=role == "label"):
                answer.waiting_for = role
                yield answer
        finally:
            answer.ahead = answer.waiting_for = None

    def classify_many(self, texts: Sequence[Any], job: Job, batch_size: int | None = None) -> Iterator[BatchProgress]:
        """Admit a batch of texts to label (UserInputError now if too many or none; Busy if the line is full).

        Returns a generator of its progress (pipeline.batch): each slice takes a turn of its own, after
        every label and reply that asks, so no one waits behind the batch for more than one slice.
        Cancelling the job or closing the generator stops it between two slices.
        """
        run = batch.classify_many(self._engine(), texts, batch_size, turn=lambda: self.gate.turn(job, batch=True))
        self.gate.admit(job)
        return self._batch(run, job)

    def _batch(self, run: Iterator[BatchProgress], job: Job) -> Iterator[BatchProgress]:
        try:
            yield from run  # closing this generator closes run too
        finally:
            self.gate.leave(job)

    def classify_all(self, texts: Sequence[Any], job: Job, batch_size: int | None = None) -> BatchProgress:
        """Run a batch to its end (see classify_many): its last progress, with every text's result."""
        return last(self.classify_many(texts, job, batch_size))

    def answer(self, request: Request, job: Job) -> Answer:
        """Run the request to its end (the whole reply); Cancelled if the job is cancelled first."""
        return last(self.run(request, job))
