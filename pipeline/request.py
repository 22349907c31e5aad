"""One raw request (text, history, mode) checked, routed and tokenized once, before it waits for the model."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Protocol, Sequence

from .messages import chars_for_tokens, limit_in_chars, refusal
from .routing import Mode, route

ROLES = ("user", "assistant")
# C0/C1 controls other than tab, newline and carriage return carry no meaning for the model.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# A token covers at most this many characters in practice: longer text is refused before tokenizing.
MAX_CHARS_PER_TOKEN = 16


class Tokenizing(Protocol):
    """What preparing a request needs from a model: its limit and its three encodings."""

    max_input_tokens: int

    def review_ids(self, text: str) -> list[int]:
        """Token ids of the text as the sentiment role reads it (quoted: see SentimentPrompt.quote)."""

    def message_ids(self, text: str) -> list[int]:
        """Token ids of the text as one chat message's content."""

    def prompt_ids(self, history: list[dict[str, str]], message: str,
                   message_ids: list[int]) -> tuple[list[int], int]:
        """(the chat prompt's ids, history messages dropped to fit), or UserInputError.

        A model that takes a per-request system prompt also accepts system=str (Request.system).
        """


@dataclass(frozen=True)
class Sampling:
    """One request's own generation options (the OpenAI door's); None: the engine's settings."""

    max_new_tokens: int | None = None  # at most the engine's CHAT_MAX_NEW_TOKENS
    temperature: float | None = None  # 0: greedy
    top_p: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Request:
    """A checked message: which roles run, its text and history, and the ids each role reads."""

    mode: Mode
    text: str
    history: tuple[dict[str, str], ...] = ()
    review_ids: tuple[int, ...] | None = None  # set when the sentiment role runs
    message_ids: tuple[int, ...] | None = None  # set when the chat role runs: the text as a chat message
    prompt_ids: tuple[int, ...] | None = None  # set when the chat role runs: the whole prompt
    history_dropped: int = 0
    system: str | None = None  # the chat role's system prompt for this request (None: the engine's)
    sampling: Sampling | None = None  # this request's generation options (None: the engine's)

    @property
    def wants_label(self) -> bool:
        """Whether the sentiment role runs."""
        return self.mode is not Mode.CHAT

    @property
    def wants_reply(self) -> bool:
        """Whether the chat role runs."""
        return self.mode is not Mode.EMOTION


def prepare(model: Tokenizing, text: Any, history: Any = None, mode: Any = None, what: str = "text",
            tags: bool = True, system: str | None = None) -> Request:
    """The request, checked and tokenized for the roles it asks for, or UserInputError saying what is wrong.

    With tags, a leading #EMOTION# / #CHAT# in the text wins over mode (unset: both roles). `what`
    names the text in messages ("text" for the JSON API, "message" for the page and the chat API).
    system replaces the chat role's system prompt for this request.
    """
    text, mode = _clean(_string(text, what)), check_mode(mode)
    if tags:
        routed = route(text, mode)
        mode, text = routed.mode, routed.text
    message = _not_empty(text, what)
    review_ids = message_ids = None
    if mode is not Mode.CHAT:
        review_ids = tuple(_within_limit(model, message, model.review_ids))
    if mode is not Mode.EMOTION:
        message_ids = tuple(_within_limit(model, message, model.message_ids))
    request = Request(mode, message, review_ids=review_ids, message_ids=message_ids, system=system)
    return with_history(model, request, history)


def with_history(model: Tokenizing, request: Request, history: Any) -> Request:
    """The request after this history (checked; the chat prompt rebuilt unless the history is the same)."""
    history = tuple(check_history(history))
    if request.message_ids is None or (history == request.history and request.prompt_ids is not None):
        return replace(request, history=history)
    # Only a request with its own system prompt passes one: models without that option still work.
    own = {} if request.system is None else {"system": request.system}
    ids, dropped = model.prompt_ids(list(history), request.text, list(request.message_ids), **own)
    return replace(request, history=history, prompt_ids=tuple(ids), history_dropped=dropped)


def check_mode(value: Any) -> Mode:
    """A mode from its name (unset: both), or UserInputError naming the choices."""
    if value is None or value == "":
        return Mode.BOTH
    try:
        return Mode(value)
    except ValueError:
        raise refusal("bad_mode", choices=", ".join(m.value for m in Mode), value=value) from None


def check_history(history: Any) -> list[dict[str, str]]:
    """History as [{"role": "user"|"assistant", "content": str}] without empty messages, or UserInputError."""
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise refusal("history_not_list", type=json_type(history))
    cleaned = []
    for i, message in enumerate(history):
        if not isinstance(message, dict):
            raise refusal("history_not_object", i=i)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise refusal("history_bad_role", i=i, role=role, roles=", ".join(ROLES))
        if not isinstance(content, str):
            raise refusal("history_not_string", i=i, type=json_type(content))
        content = _clean(content)
        if content.strip():
            cleaned.append({"role": role, "content": content})
    return cleaned


def json_type(value: Any) -> str:
    """The value's type in the words of JSON ("a string", "a list", "null", ...)."""
    names = {dict: "an object", list: "a list", tuple: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _string(text: Any, what: str) -> str:
    if not isinstance(text, str):
        raise refusal("not_string", what=what, type=json_type(text))
    return text


def _clean(text: str) -> str:
    return _SURROGATE.sub("\ufffd", _CONTROL.sub("", text))


def _not_empty(text: str, what: str) -> str:
    if not text.strip():
        raise refusal("empty", what=what)
    return text


def _within_limit(model: Tokenizing, text: str, encode) -> Sequence[int]:
    limit = model.max_input_tokens
    if len(text) > limit * MAX_CHARS_PER_TOKEN:  # refused before the tokenizer spends time on it
        raise refusal("too_long_unread", chars=len(text), limit=limit, limit_chars=chars_for_tokens(limit))
    ids = encode(text)
    if len(ids) > limit:
        raise refusal("too_long", tokens=len(ids), limit=limit, chars=len(text),
                      limit_chars=limit_in_chars(len(text), len(ids), limit))
    return ids
