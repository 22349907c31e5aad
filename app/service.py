"""The one way to run a request: every door (the page, the named Gradio API, the JSON APIs) prepares its
request, then calls ModelService.run(): admission, the wait for the model, the roles and the release all
happen there. No Gradio here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from pipeline import ChatStream, Request, Sentiment, batch
from pipeline.batch import BatchProgress
from pipeline.iteration import last
from pipeline.messages import refusal
from pipeline.request import prepare, with_history

from .gate import MAX_LABEL_PASS_MS, MAX_LABEL_PASSES, MAX_PER_CLIENT, Cancelled, Job, ModelGate


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

    def __init__(self, engine, max_waiting: int, max_label_passes: int | None = MAX_LABEL_PASSES,
                 max_label_pass_ms: float | None = MAX_LABEL_PASS_MS, max_per_client: int | None = MAX_PER_CLIENT):
        self.engine = engine
        self.gate = ModelGate(max_waiting, max_label_passes, max_label_pass_ms, max_per_client)

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
                            self.gate.started(job)  # labels may run between its tokens again
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
