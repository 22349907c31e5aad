"""The JSON API beside the page on the same port: GET /healthz, POST /api/infer, POST /api/classify; no Gradio here.

Each handler reads its body (bounded), parses it into its request model, runs its work through the one
bridge (app.streaming) and answers; every refusal becomes a status and {"error": message} in error_response.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import ClientDisconnect

from pipeline import Sentiment, UserInputError
from pipeline.batch import BatchProgress
from pipeline.request import json_type

from .client_key import TrustedProxies, request_client
from .gate import Cancelled, Job
from .service import Answer, ModelService
from .streaming import result_of

log = logging.getLogger(__name__)

# Statuses of refusals that are not the caller's input: the model not loaded yet, the line full, a batch too big.
STATUS_BY_REFUSAL = {"loading": 503, "busy": 503, "too_many_texts": 413}
RETRY_AFTER_S = {"loading": 5, "busy": 5}


class InferBody(BaseModel):
    """POST /api/infer: one text; its values are checked by the service, as on every door."""

    model_config = ConfigDict(extra="forbid")
    text: Any
    history: Any = None
    mode: Any = None


class ClassifyBody(BaseModel):
    """POST /api/classify: many texts."""

    model_config = ConfigDict(extra="forbid")
    texts: Any


EXAMPLES = {InferBody: '{"text": "..."}', ClassifyBody: '{"texts": ["...", "..."]}'}


def json_object(body: bytes, example: str) -> dict[str, Any]:
    """A raw body as a JSON object, or UserInputError saying what it is instead (example: what to send)."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserInputError("the body is not UTF-8 text") from None
    except (ValueError, RecursionError):
        raise UserInputError(f"the body is not valid JSON; send {example}") from None
    if not isinstance(payload, dict):
        raise UserInputError(f"the body must be a JSON object, not {json_type(payload)}")
    return payload


def parse_body(body: bytes, model: type[BaseModel] = InferBody) -> BaseModel:
    """A raw JSON API body as its request model, or UserInputError saying what is wrong."""
    payload = json_object(body, EXAMPLES[model])
    # Checked here, not left to pydantic: field names are the caller's text and may hold lone surrogates.
    unknown = sorted(set(payload) - set(model.model_fields))
    if unknown:
        raise UserInputError(f"unknown fields {', '.join(unknown)}; expected {', '.join(model.model_fields)}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise UserInputError(f'"{exc.errors()[0]["loc"][0]}" is required') from None


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


def error_response(exc: UserInputError) -> JSONResponse:
    """A refusal as the API says it: its status (STATUS_BY_REFUSAL, else 400) and English message."""
    retry = RETRY_AFTER_S.get(exc.key)
    return error(STATUS_BY_REFUSAL.get(exc.key, 400), str(exc), {"Retry-After": str(retry)} if retry else None)


class BodyTooLarge(Exception):
    """A request body over its door's limit (answered 413)."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, or BodyTooLarge past limit bytes (declared or as it streams in)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _answer(request: Request, limit: int, model: type[BaseModel], what: str,
                  work: Callable[[BaseModel, Job], Any], result: Callable[[Any], dict],
                  trusted: TrustedProxies) -> Response:
    """Read, parse and run one JSON request (its client: the caller's address); every outcome in the API's shape."""
    try:
        body = parse_body(await read_body(request, limit), model)
        job = Job(request_client(request, trusted))
        return JSONResponse(result(await result_of(lambda: work(body, job), job, client=request)))
    except BodyTooLarge:
        return error(413, f"the body is too large; the limit is {limit} bytes")
    except ClientDisconnect:
        return error(499, "the client went away while sending")
    except UserInputError as exc:
        return error_response(exc)
    except Cancelled as exc:
        return error(499, str(exc))
    except Exception:  # the caller still gets the API's error shape; the log gets the traceback
        log.exception("%s failed", request.url.path)
        return error(500, f"internal error: the model could not {what}")


def _wrong_method(example: str) -> Callable[[], Response]:
    def wrong_method() -> Response:
        """405 in the API's error shape."""
        return error(405, f"use POST with a JSON body such as {example}", headers={"Allow": "POST"})

    return wrong_method


def api_router(service: ModelService, max_body_bytes: int = 1 << 20, max_batch_body_bytes: int = 8 << 20,
               trusted: TrustedProxies | None = None) -> APIRouter:
    """/healthz, /api/infer (bodies up to max_body_bytes) and /api/classify (up to max_batch_body_bytes).

    A caller is its address, or the one X-Forwarded-For names when the connection comes from a trusted proxy.
    """
    trusted = trusted or TrustedProxies()
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
        def work(body: InferBody, job: Job) -> Answer:
            return service.answer(service.prepare(body.text, body.history, body.mode), job)

        return await _answer(request, max_body_bytes, InferBody, "answer this request", work, infer_result, trusted)

    @router.post("/api/classify")
    async def classify(request: Request) -> Response:
        """The sentiment of each of many texts, as JSON; a bad text gets an error in its place."""
        return await _answer(request, max_batch_body_bytes, ClassifyBody, "label these texts",
                             lambda body, job: service.classify_all(body.texts, job), classify_result, trusted)

    for path, model in (("/api/infer", InferBody), ("/api/classify", ClassifyBody)):
        router.add_api_route(path, _wrong_method(EXAMPLES[model]), methods=["GET", "PUT", "PATCH", "DELETE"])
    return router
