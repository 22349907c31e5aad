"""What a POST /v1/chat/completions asks for, read and checked as OpenAI's reference defines it, and
OpenAI's error shape, {"error": {"message", "type", "param", "code"}}, for every refusal."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from pipeline import UserInputError
from pipeline.request import json_type

from .http_api import RETRY_AFTER_S, STATUS_BY_REFUSAL, json_object

# OpenAI's own limit on stop sequences.
MAX_STOP = 4
# A system message may be called "developer" (OpenAI's newer name for it; the openai client sends it for some models).
SYSTEM_ROLES = ("system", "developer")
ROLES = ("system", "developer", "user", "assistant")
class OpenAIError(Exception):
    """A refusal in OpenAI's terms: status, message, and the offending parameter and a code when there is one."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_type(status: int) -> str:
    """OpenAI's error type for a status."""
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}} with its status."""
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates from the caller's JSON
    body = {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def refusal_error(exc: UserInputError, param: str | None = "messages") -> OpenAIError:
    """A service refusal (bad message, the line full, the model loading) with the status every door gives it."""
    status = STATUS_BY_REFUSAL.get(exc.key, 400)
    retry = RETRY_AFTER_S.get(exc.key)
    return OpenAIError(status, str(exc), param if status == 400 else None, exc.key,
                       {"Retry-After": str(retry)} if retry else None)


class StreamOptions(BaseModel):
    """stream_options: include_usage adds a last chunk with the token counts."""

    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool | None = None


class ChatCompletionBody(BaseModel):
    """POST /v1/chat/completions: the fields of OpenAI's reference that this model honours.

    Other fields OpenAI defines (tools, logprobs, penalties, user, ...) are accepted and ignored, as
    OpenAI-compatible servers do, so clients that always send them keep working.
    """

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[Any]
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: StrictInt | None = Field(None, ge=-(2**63), le=2**63 - 1)  # what torch.manual_seed takes
    n: StrictInt | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    # Extension: also the sentiment label of the last user message (the gate runs both roles, label first).
    sentiment: StrictBool | None = False

    @property
    def stops(self) -> list[str]:
        """`stop` as a list (one string, several, or none)."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


@dataclasses.dataclass(frozen=True)
class Conversation:
    """A request's messages as the service takes them: the last user message, the history before it, a system prompt."""

    message: str
    history: list[dict[str, str]]
    system: str | None


def parse_chat_body(raw: bytes) -> ChatCompletionBody:
    """The body as its model, or OpenAIError(400) naming the parameter at fault."""
    try:
        payload = json_object(raw, '{"model": "...", "messages": [...]}')
    except UserInputError as exc:
        raise OpenAIError(400, str(exc)) from None
    try:
        body = ChatCompletionBody.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise OpenAIError(400, f"{param}: {first['msg']}" if param else first["msg"], param) from None
    if body.n not in (None, 1):
        raise OpenAIError(400, f"n must be 1: this server returns one choice per request, got {body.n}", "n")
    if len(body.stops) > MAX_STOP or not all(body.stops):
        raise OpenAIError(400, f"stop takes at most {MAX_STOP} non-empty strings", "stop")
    return body


def text_of(content: Any, i: int) -> str:
    """A message's content as text: a string, a list of text parts, or null (an assistant's tool call)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else json_type(part)
                raise OpenAIError(400, f"messages[{i}].content[{j}]: only text parts are supported, got {kind!r}",
                                  f"messages.[{i}].content")
            texts.append(part["text"])
        return "".join(texts)
    raise OpenAIError(400, f"messages[{i}].content must be a string or a list of text parts, not {json_type(content)}",
                      f"messages.[{i}].content")


def conversation(messages: list[Any]) -> Conversation:
    """The messages as (last user message, history, system prompt), or OpenAIError(400) saying which is wrong.

    System messages, wherever they are, make this request's system prompt (joined by blank lines).
    """
    if not messages:
        raise OpenAIError(400, "messages must hold at least one message", "messages")
    systems, turns = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise OpenAIError(400, f"messages[{i}] must be an object, not {json_type(message)}", "messages")
        role = message.get("role")
        if role not in ROLES:
            raise OpenAIError(400, f"messages[{i}] has unknown role {role!r}; expected one of {', '.join(ROLES)}",
                              f"messages.[{i}].role")
        text = text_of(message.get("content"), i)
        if role in SYSTEM_ROLES:
            systems.append(text)
        else:
            turns.append({"role": role, "content": text})
    if not turns or turns[-1]["role"] != "user":
        raise OpenAIError(400, "the last message (other than system ones) must be from the user", "messages")
    system = "\n\n".join(s for s in systems if s.strip()) or None
    return Conversation(turns[-1]["content"], turns[:-1], system)
