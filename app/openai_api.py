"""The OpenAI-compatible door: GET /v1/models and POST /v1/chat/completions (streamed or not), as OpenAI's
reference defines them, so the official `openai` client, LangChain, Open WebUI and editors' plugins work unchanged.

A completion is one more door to the same service: its conversation becomes the history of
service.prepare() (the same prompt building and KV reuse), service.run() admits it to the one line, and
app.streaming.steps_of drives it, so a client that goes away ends the generation at its next token.
Every refusal is answered in OpenAI's error shape, {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from pipeline import Mode, UserInputError
from pipeline.messages import refusal
from pipeline.request import Sampling

from .client_key import TrustedProxies, request_client
from .gate import Cancelled, Job
from .service import Answer, ModelService
from .http_api import read_body, BodyTooLarge
from .openai_request import (OpenAIError, conversation, openai_error,
                             parse_chat_body, refusal_error)
from .streaming import cancel_on_disconnect, steps_of

log = logging.getLogger(__name__)

OWNED_BY = "qwen-all-in-one"
# Our finish reasons in OpenAI's words: a reply cut for repeating itself is cut short, as at the token limit;
# the choice's stop_reason (an extension, as in vLLM) says "loop" then.
FINISH_REASON = {"stop": "stop", "length": "length", "loop": "length"}


class StopText:
    """A reply's text cut at the first stop string: what may be sent so far, holding back a possible start of one."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.sent = 0  # characters of the reply already handed out
        self.stopped: str | None = None  # the stop string found

    def advance(self, text: str, final: bool = False) -> str:
        """The next piece of text to send, given the whole reply so far (final: nothing more is coming)."""
        if self.stopped is not None:
            return ""
        end = len(text)
        # A stop string can only be found where the new text could complete one.
        start = max(0, self.sent - max((len(s) for s in self.stops), default=0))
        hits = [(i, s) for s in self.stops if (i := text.find(s, start)) >= 0]
        if hits:
            end, self.stopped = min(hits)
        elif not final:
            end -= max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        piece = text[self.sent:end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return piece


@dataclasses.dataclass
class Completion:
    """One completion as it runs: its id, the text sent, and how it ended."""

    id: str
    created: int
    model: str
    request: Any
    answer: Answer | None = None
    text: str = ""
    finish_reason: str | None = None
    stop_reason: str | None = None

    def usage(self, count_tokens) -> dict[str, int]:
        """Token counts: the prompt read, and the reply generated (the reply sent when cut at a stop string)."""
        prompt = len(self.request.prompt_ids)
        stream = self.answer.stream if self.answer else None
        if stream is None or (self.finish_reason == "stop" and self.stop_reason is not None):
            completion = len(count_tokens(self.text)) if self.text else 0
        else:
            completion = stream.new_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def sentiment_of(answer: Answer | None) -> dict[str, Any] | None:
    """The extension field: the last user message's label, as /api/infer gives it."""
    s = answer and answer.sentiment
    if not s:
        return None
    return {"label": s.label, "confidence": round(s.confidence, 4), "uncertain": s.uncertain,
            "latency_ms": round(s.latency_ms, 1)}


async def run_completion(steps, completion: Completion, job: Job, stops: list[str]) -> AsyncIterator[str]:
    """Each new piece of reply text from service.run's steps; sets how the completion ended.

    Cut at a stop string, leaving steps_of cancels the job there: the model stops at its next token.
    """
    cut = StopText(stops)
    async with contextlib.aclosing(steps_of(steps, job)) as answers:
        async for answer in answers:
            completion.answer = answer
            if answer.stream is not None and (piece := cut.advance(answer.stream.text)):
                completion.text += piece
                yield piece
            if cut.stopped is not None:
                break
    stream = completion.answer.stream
    if cut.stopped is None and (piece := cut.advance(stream.text, final=True)):
        completion.text += piece  # what was held back for a stop string that never came
        yield piece
    if cut.stopped is not None:
        completion.finish_reason, completion.stop_reason = "stop", cut.stopped
    else:
        completion.finish_reason = FINISH_REASON.get(stream.finish_reason, "stop")
        completion.stop_reason = "loop" if stream.finish_reason == "loop" else None


def openai_router(service: ModelService, model_id: str | None = None, max_body_bytes: int = 1 << 20,
                  trusted: TrustedProxies | None = None) -> APIRouter:
    """GET /v1/models, GET /v1/models/{id} and POST /v1/chat/completions (bodies up to max_body_bytes)."""
    router = APIRouter()
    trusted = trusted or TrustedProxies()
    started = int(time.time())

    def loaded_id() -> str | None:
        engine = service.engine
        return model_id or (engine.model_name if engine is not None else None)

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": started, "owned_by": OWNED_BY}

    def not_found(name: str) -> OpenAIError:
        return OpenAIError(404, f"The model `{name}` does not exist; this server serves `{loaded_id()}`",
                           "model", "model_not_found")

    @router.get("/v1/models")
    def list_models() -> Response:
        """The loaded model (none while it loads)."""
        name = loaded_id()
        return JSONResponse({"object": "list", "data": [model_card(name)] if name else []})

    @router.get("/v1/models/{name:path}")
    def get_model(name: str) -> Response:
        """One model's card, or 404 for any other name."""
        if name != loaded_id():
            return _as_response(not_found(name))
        return JSONResponse(model_card(name))

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        """A chat completion of the messages, streamed as server-sent events or whole."""
        try:
            body = parse_chat_body(await read_body(request, max_body_bytes))
            name = loaded_id()
            if service.engine is None:
                raise refusal_error(refusal("loading"), None)
            if body.model and body.model != name:
                raise not_found(body.model)
            talk = conversation(body.messages)
            try:
                prepared = service.prepare(talk.message, talk.history, Mode.BOTH if body.sentiment else Mode.CHAT,
                                           what="message", tags=False, system=talk.system)
            except UserInputError as exc:
                raise refusal_error(exc) from None
            sampling = Sampling(max_new_tokens=body.max_completion_tokens or body.max_tokens,
                                temperature=body.temperature, top_p=body.top_p, seed=body.seed)
            if sampling != Sampling():  # nothing asked: the engine's own settings, the page's very path
                prepared = dataclasses.replace(prepared, sampling=sampling)
            completion = Completion(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), name, prepared)
            job = Job(request_client(request, trusted))
            try:
                steps = service.run(prepared, job)  # admitted now: Busy before any response is started
            except UserInputError as exc:
                raise refusal_error(exc, None) from None
            pieces = run_completion(steps, completion, job, body.stops)
            count = service.engine.message_ids
            if body.stream:
                usage = bool(body.stream_options and body.stream_options.include_usage)
                return StreamingResponse(_events(completion, pieces, job, usage, count, body.sentiment),
                                         media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            return JSONResponse(await _whole(request, completion, pieces, job, count, body.sentiment))
        except OpenAIError as exc:
            return _as_response(exc)
        except BodyTooLarge:
            return openai_error(413, f"the body is too large; the limit is {max_body_bytes} bytes", code="too_large")
        except ClientDisconnect:
            return openai_error(499, "the client went away while sending", code="cancelled")
        except Cancelled as exc:
            return openai_error(499, str(exc), code="cancelled")
        except Exception:  # the caller still gets OpenAI's error shape; the log gets the traceback
            log.exception("%s failed", request.url.path)
            return openai_error(500, "internal error: the model could not complete this chat", code="internal_error")

    for path in ("/v1/chat/completions",):
        router.add_api_route(path, _wrong_method, methods=["GET", "PUT", "PATCH", "DELETE"])
    return router


def _wrong_method() -> Response:
    """405 in OpenAI's error shape."""
    return openai_error(405, 'use POST with a JSON body such as {"model": "...", "messages": [...]}',
                        code="method_not_allowed", headers={"Allow": "POST"})


def _as_response(exc: OpenAIError) -> JSONResponse:
    return openai_error(exc.status, exc.message, exc.param, exc.code, exc.headers)


async def _whole(client: Request, completion: Completion, pieces: AsyncIterator[str], job: Job,
                 count_tokens, with_sentiment: bool) -> dict[str, Any]:
    """A non-streamed chat.completion; a client that hangs up meanwhile cancels the job."""
    # A plain response hears of a client gone only by reading the connection.
    watcher = asyncio.ensure_future(cancel_on_disconnect(client, job))
    try:
        async with contextlib.aclosing(pieces):
            async for _ in pieces:
                pass
    finally:
        job.cancel()  # a no-op for a finished job
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    choice = {"index": 0, "message": {"role": "assistant", "content": completion.text},
              "logprobs": None, "finish_reason": completion.finish_reason, "stop_reason": completion.stop_reason}
    body = {"id": completion.id, "object": "chat.completion", "created": completion.created,
            "model": completion.model, "choices": [choice], "usage": completion.usage(count_tokens)}
    if with_sentiment:
        body["sentiment"] = sentiment_of(completion.answer)
    return body


def _sse(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _events(completion: Completion, pieces: AsyncIterator[str], job: Job, usage: bool,
                  count_tokens, with_sentiment: bool) -> AsyncIterator[str]:
    """chat.completion.chunk events, then data: [DONE]; Starlette cancels this when the client goes away."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        if finish_reason is not None:
            choice["stop_reason"] = completion.stop_reason
        body = {"id": completion.id, "object": "chat.completion.chunk", "created": completion.created,
                "model": completion.model, "choices": [choice], **extra}
        if usage:
            body["usage"] = None  # as OpenAI: every chunk carries usage, null until the last one
        return _sse(body)

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for piece in pieces:
            yield chunk({"content": piece})
        # The label (extension) comes with the last chunk: it is known long before, but the first is sent at once.
        extra = {"sentiment": sentiment_of(completion.answer)} if with_sentiment else {}
        yield chunk({}, completion.finish_reason, **extra)
        if usage:
            yield _sse({"id": completion.id, "object": "chat.completion.chunk", "created": completion.created,
                        "model": completion.model, "choices": [], "usage": completion.usage(count_tokens)})
    except Cancelled:
        return  # the client is gone: nobody reads an error
    except Exception:  # headers are sent: the error goes in the stream, as OpenAI-compatible servers do
        log.exception("/v1/chat/completions failed while streaming")
        yield _sse({"error": {"message": "internal error: the model could not complete this chat",
                              "type": "server_error", "param": None, "code": "internal_error"}})
    finally:
        job.cancel()  # a no-op for a finished job; ends the generation of one whose client went away
        with contextlib.suppress(Exception):
            await pieces.aclose()
    yield "data: [DONE]\n\n"
