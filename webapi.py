"""The JSON API (POST /api/infer, GET /healthz), beside the page on the same port; no Gradio here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Callable

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from gate import BUSY_MESSAGE, Answer, Busy, Cancelled, Job, ModelService
from pipeline import Sentiment, UserInputError
from pipeline.batch import BatchProgress
from pipeline.request import json_type

log = logging.getLogger(__name__)

INFER_FIELDS = ("text", "history", "mode")
CLASSIFY_FIELDS = ("texts",)


def parse_body(body: bytes, fields: tuple[str, ...] = INFER_FIELDS, required: str = "text",
               example: str = '{"text": "..."}') -> dict[str, Any]:
    """The fields of a raw JSON API body (their values are checked by the service), or UserInputError."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserInputError("the body is not UTF-8 text") from None
    except (ValueError, RecursionError):
        raise UserInputError(f"the body is not valid JSON; send {example}") from None
    if not isinstance(payload, dict):
        raise UserInputError(f"the body must be a JSON object, not {json_type(payload)}")
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        raise UserInputError(f"unknown fields {', '.join(unknown)}; expected {', '.join(fields)}")
    if required not in payload:
        raise UserInputError(f'"{required}" is required')
    return payload


def infer_result(answer: Answer) -> dict[str, Any]:
    """An /api/infer response body from what the request got."""
    sentiment, stream = answer.sentiment, answer.stream
    return {
        "emotion_label": sentiment and sentiment.label,
        "confidence": sentiment and round(sentiment.confidence, 4),
        "uncertain": sentiment and sentiment.uncertain,
        "chat_response": stream and stream.text,
        "inference_time_ms": {"emotion": sentiment and round(sentiment.latency_ms, 1),
                              "chat": stream and round(stream.latency_ms, 1),
                              "total": round(answer.model_ms, 1)},
    }


def sentiment_item(result: Sentiment | UserInputError) -> dict[str, Any]:
    """One text's entry in a batch's results: its label, or why it was not read."""
    if isinstance(result, UserInputError):
        return {"emotion_label": None, "confidence": None, "uncertain": None, "error": str(result)}
    return {"emotion_label": result.label, "confidence": round(result.confidence, 4), "uncertain": result.uncertain,
            "error": None}


def classify_result(progress: BatchProgress) -> dict[str, Any]:
    """A /api/classify response body: one entry per text, in order, and the model's time for them all."""
    return {"results": [sentiment_item(r) for r in progress.results],
            "labelled": progress.total - progress.refused, "refused": progress.refused,
            "inference_time_ms": round(sum(progress.slice_ms), 1)}


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


async def _body_or_error(request: Request, limit: int) -> bytes | JSONResponse:
    """The request's body, or the error response for one over limit bytes or a client gone while sending."""
    try:
        return await _read_body(request, limit)
    except _TooLarge:
        return error(413, f"the body is too large; the limit is {limit} bytes")
    except ClientDisconnect:
        return error(499, "the client went away while sending")


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


def _wrong_method(example: str) -> Callable[[], Response]:
    def wrong_method() -> Response:
        """405 in the API's error shape."""
        return error(405, f"use POST with a JSON body such as {example}", headers={"Allow": "POST"})

    return wrong_method


def api_router(service: ModelService, max_body_bytes: int = 1 << 20, max_batch_body_bytes: int = 8 << 20) -> APIRouter:
    """/healthz, /api/infer (bodies up to max_body_bytes) and /api/classify (up to max_batch_body_bytes)."""
    router = APIRouter()

    @router.api_route("/healthz", methods=["GET", "HEAD"])
    def healthz() -> Response:
        """200 with the model's name once it is loaded, 503 before."""
        engine = service.engine
        if engine is None:
            return JSONResponse({"status": "loading", "error": "the model is still loading"}, status_code=503)
        return JSONResponse({"status": "ok", "model": engine.model_name, "linear_layers": engine.linear_path,
                             "busy": service.gate.busy,
                             "waiting": service.gate.waiting, "active_generations": engine.active_generations})

    @router.post("/api/infer")
    async def infer(request: Request) -> Response:
        """Sentiment and/or a chat reply for one text, as JSON."""
        body = await _body_or_error(request, max_body_bytes)
        if isinstance(body, Response):
            return body
        try:
            fields = parse_body(body)
        except UserInputError as exc:
            return error(400, str(exc))
        try:
            prepared = service.prepare(fields["text"], fields.get("history"), fields.get("mode"))
        except UserInputError as exc:
            return error(503 if service.engine is None else 400, str(exc))
        job = Job()
        try:
            answer = await _run_until_disconnect(request, lambda: service.answer(prepared, job), job)
        except Busy:
            return error(503, BUSY_MESSAGE, headers={"Retry-After": "5"})
        except Cancelled as exc:
            return error(499, str(exc))
        except Exception:  # the caller still gets the API's error shape; the log gets the traceback
            log.exception("/api/infer failed")
            return error(500, "internal error: the model could not answer this request")
        return JSONResponse(infer_result(answer))

    @router.post("/api/classify")
    async def classify(request: Request) -> Response:
        """The sentiment of each of many texts, as JSON; a bad text gets an error in its place."""
        body = await _body_or_error(request, max_batch_body_bytes)
        if isinstance(body, Response):
            return body
        try:
            texts = parse_body(body, CLASSIFY_FIELDS, "texts", '{"texts": ["...", "..."]}')["texts"]
        except UserInputError as exc:
            return error(400, str(exc))
        job = Job()
        try:
            progress = await _run_until_disconnect(request, lambda: service.classify_all(texts, job), job)
        except UserInputError as exc:
            return error({"loading": 503, "too_many_texts": 413}.get(exc.key, 400), str(exc))
        except Busy:
            return error(503, BUSY_MESSAGE, headers={"Retry-After": "5"})
        except Cancelled as exc:
            return error(499, str(exc))
        except Exception:
            log.exception("/api/classify failed")
            return error(500, "internal error: the model could not label these texts")
        return JSONResponse(classify_result(progress))

    for path, example in (("/api/infer", '{"text": "..."}'), ("/api/classify", '{"texts": ["...", "..."]}')):
        router.add_api_route(path, _wrong_method(example), methods=["GET", "PUT", "PATCH", "DELETE"])

    return router
