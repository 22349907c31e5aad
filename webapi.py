"""The model's shared gate and the JSON API (POST /api/infer, GET /healthz); no Gradio here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from pipeline import Mode, UserInputError

log = logging.getLogger(__name__)

BUSY_MESSAGE = "busy, try again"
INFER_FIELDS = ("text", "history", "mode")


class Busy(Exception):
    """Too many jobs already wait for the model."""


class Cancelled(Exception):
    """The job was cancelled (Stop, Clear, or its client went away)."""


class Job:
    """One request's claim on the model, cancellable while it waits and while it streams."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._stream = None
        self._listeners: list[Callable[[], None]] = []
        # Clear while a step works on the job: whoever cancels can wait for the engine to be let go.
        self.idle = threading.Event()
        self.idle.set()

    @property
    def cancelled(self) -> bool:
        """Whether cancel() was called."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop the job: leave the gate's queue, or end its chat stream at the next token."""
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

    @contextmanager
    def working(self) -> Iterator[None]:
        """Mark the job busy (not idle) for the block."""
        self.idle.clear()
        try:
            yield
        finally:
            self.idle.set()

    def on_cancel(self, listener: Callable[[], None]) -> None:
        """Call listener (from the cancelling thread) when the job is cancelled."""
        with self._lock:
            self._listeners.append(listener)


class ModelGate:
    """The model's single slot, shared by the page, the Gradio API and /api/infer.

    Jobs take the slot in arrival order. A job arriving while max_waiting others already wait is
    refused with Busy, so a burst of requests gets a quick "try again" instead of a long wait.
    """

    def __init__(self, max_waiting: int):
        if max_waiting < 1:
            raise ValueError(f"max_waiting must be at least 1, got {max_waiting}")
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._holder: Job | None = None

    @property
    def waiting(self) -> int:
        """Jobs queued for the slot (not counting the one holding it)."""
        with self._cond:
            return len(self._queue)

    @property
    def busy(self) -> bool:
        """Whether a job holds the slot."""
        with self._cond:
            return self._holder is not None

    def enqueue(self, job: Job, admitted: bool = False) -> None:
        """Put job in line; Busy if the line is full, unless it was already admitted elsewhere."""
        with self._cond:
            if not admitted and len(self._queue) >= self.max_waiting:
                raise Busy(BUSY_MESSAGE)
            self._queue.append(job)
        job.on_cancel(self._wake)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def acquire(self, job: Job) -> None:
        """Wait for job's turn and take the slot; Cancelled if the job is cancelled first."""
        with self._cond:
            while True:
                if job.cancelled:
                    if job in self._queue:
                        self._queue.remove(job)
                        self._cond.notify_all()
                    raise Cancelled("cancelled while waiting for the model")
                if self._holder is None and self._queue and self._queue[0] is job:
                    self._queue.popleft()
                    self._holder = job
                    return
                self._cond.wait()

    def release(self, job: Job) -> None:
        """Give the slot back (a no-op unless job holds it)."""
        with self._cond:
            if self._holder is job:
                self._holder = None
            elif job in self._queue:
                self._queue.remove(job)
            self._cond.notify_all()

    @contextmanager
    def hold(self, job: Job, admitted: bool = False) -> Iterator[None]:
        """Queue for the slot (Busy if full), hold it for the block, then pass it on."""
        self.enqueue(job, admitted)
        try:
            self.acquire(job)
            yield
        finally:
            self.release(job)


@dataclass(frozen=True)
class InferRequest:
    """A checked /api/infer body."""

    text: str
    history: list
    mode: Mode


class ModelService:
    """The engine (None while loading), the gate in front of it, and the JSON API's jobs."""

    def __init__(self, engine, queue_max_size: int, max_body_bytes: int = 1 << 20):
        self.engine = engine
        self.gate = ModelGate(queue_max_size)
        self.max_body_bytes = max_body_bytes

    def require_engine(self):
        """The engine, or UserInputError while the model is still loading."""
        if self.engine is None:
            raise UserInputError("the model is still loading; try again in a moment")
        return self.engine

    def parse_infer(self, body: bytes) -> InferRequest:
        """The request in a raw /api/infer body, or UserInputError saying what is wrong with it."""
        try:
            payload = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise UserInputError("the body is not UTF-8 text") from None
        except (ValueError, RecursionError):
            raise UserInputError('the body is not valid JSON; send {"text": "..."}') from None
        if not isinstance(payload, dict):
            raise UserInputError(f"the body must be a JSON object, not {_json_type(payload)}")
        unknown = sorted(set(payload) - set(INFER_FIELDS))
        if unknown:
            raise UserInputError(f"unknown fields {', '.join(unknown)}; expected {', '.join(INFER_FIELDS)}")
        if "text" not in payload:
            raise UserInputError('"text" is required')
        text, history, mode = payload["text"], payload.get("history"), payload.get("mode")
        if not isinstance(text, str):
            raise UserInputError(f'"text" must be a string, not {_json_type(text)}')
        if history is not None and not isinstance(history, list):
            raise UserInputError(f'"history" must be a list of messages, not {_json_type(history)}')
        modes = [m.value for m in Mode]
        if mode is not None and mode not in modes:
            raise UserInputError(f'"mode" must be one of {", ".join(modes)}, not {mode!r}')
        return InferRequest(text, history or [], Mode(mode or Mode.BOTH))

    def infer(self, request: InferRequest, job: Job) -> dict[str, Any]:
        """Run one /api/infer request: check it, wait for the model, classify and/or chat."""
        engine = self.require_engine()
        routed = engine.route(request.text, default=request.mode)
        text = engine.clean_text(routed.text)
        engine.encode_user_text(text)  # refuse an over-long text before it queues
        history = engine.clean_history(request.history)
        times: dict[str, float | None] = {"emotion": None, "chat": None, "total": None}
        result: dict[str, Any] = {"emotion_label": None, "confidence": None, "uncertain": None, "chat_response": None}
        with self.gate.hold(job):
            started = time.perf_counter()
            if routed.mode in (Mode.BOTH, Mode.EMOTION):
                sentiment = engine.classify(text)
                result["emotion_label"], result["confidence"] = sentiment.label, round(sentiment.confidence, 4)
                result["uncertain"] = sentiment.uncertain
                times["emotion"] = round(sentiment.latency_ms, 1)
            if routed.mode in (Mode.BOTH, Mode.CHAT):
                stream = job.attach(engine.chat(history, text))
                try:
                    for _ in stream:
                        pass
                finally:
                    stream.close()
                if stream.finish_reason == "cancelled":
                    raise Cancelled("cancelled while generating")
                result["chat_response"] = stream.text
                times["chat"] = round(stream.latency_ms, 1)
            times["total"] = round((time.perf_counter() - started) * 1000, 1)
        result["inference_time_ms"] = times
        return result


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The API's error shape: {"error": message}.

    A message may quote the caller's input (e.g. an unknown field's name), which JSON lets hold lone
    surrogates that UTF-8 cannot encode: those are written as \\udXXX escapes.
    """
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class _TooLarge(Exception):
    pass


async def _run_until_disconnect(request: Request, fn: Callable[[], Any], job: Job) -> Any:
    """Run fn in a worker thread; if the client hangs up first, cancel the job so the CPU is freed."""

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                log.info("client of /api/infer went away: cancelling its job")
                job.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await anyio.to_thread.run_sync(fn)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def api_router(service: ModelService) -> APIRouter:
    """/healthz and /api/infer, for mounting beside the Gradio app."""
    router = APIRouter()

    @router.api_route("/healthz", methods=["GET", "HEAD"])
    def healthz() -> Response:
        """200 with the model's name once it is loaded, 503 before."""
        engine = service.engine
        if engine is None:
            return JSONResponse({"status": "loading", "error": "the model is still loading"}, status_code=503)
        return JSONResponse({"status": "ok", "model": engine.model_name, "busy": service.gate.busy,
                             "waiting": service.gate.waiting, "active_generations": engine.active_generations})

    @router.post("/api/infer")
    async def infer(request: Request) -> Response:
        """Sentiment and/or a chat reply for one text, as JSON."""
        try:
            body = await _read_body(request, service.max_body_bytes)
        except _TooLarge:
            return error(413, f"the body is too large; the limit is {service.max_body_bytes} bytes")
        except ClientDisconnect:
            return error(499, "the client went away while sending")
        try:
            parsed = service.parse_infer(body)
        except UserInputError as exc:
            return error(400, str(exc))
        job = Job()
        try:
            result = await _run_until_disconnect(request, lambda: service.infer(parsed, job), job)
        except UserInputError as exc:
            return error(503 if service.engine is None else 400, str(exc))
        except Busy:
            return error(503, BUSY_MESSAGE, headers={"Retry-After": "5"})
        except Cancelled as exc:
            return error(499, str(exc))
        except Exception:  # the caller still gets the API's error shape; the log gets the traceback
            log.exception("/api/infer failed")
            return error(500, "internal error: the model could not answer this request")
        return JSONResponse(result)

    @router.api_route("/api/infer", methods=["GET", "PUT", "PATCH", "DELETE"])
    def infer_wrong_method() -> Response:
        """405 in the API's error shape."""
        return error(405, 'use POST with a JSON body such as {"text": "..."}', headers={"Allow": "POST"})

    return router
