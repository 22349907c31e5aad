"""Which role(s) a message asks for: the #EMOTION# / #CHAT# prefixes, or an explicit mode."""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass

from .prompts import CHAT_TAG, EMOTION_TAG


class Mode(str, enum.Enum):
    """Both roles (sentiment first), sentiment only, or chat only."""

    BOTH = "both"
    EMOTION = "emotion"
    CHAT = "chat"


_TAGS = {EMOTION_TAG.lower(): Mode.EMOTION, CHAT_TAG.lower(): Mode.CHAT}


@dataclass(frozen=True)
class Routed:
    """A message with its routing tag removed and the mode it asked for."""

    mode: Mode
    text: str


def route(text: str, default: Mode = Mode.BOTH) -> Routed:
    """Strip a leading #EMOTION# or #CHAT# tag and return the mode it names.

    Any case, and in full width too: a Chinese IME types "＃ＥＭＯＴＩＯＮ＃" or "＃EMOTION＃".
    """
    stripped = text.lstrip()
    for tag, mode in _TAGS.items():
        typed = _prefix_spelling(stripped, tag)
        if typed is not None:
            return Routed(mode, stripped[typed:].strip())
    return Routed(default, text.strip())


def _prefix_spelling(text: str, tag: str) -> int | None:
    """How many characters of text spell tag (NFKC, any case) at its start; None if they don't."""
    spelled = ""
    for i, char in enumerate(text[: len(tag)]):
        spelled += unicodedata.normalize("NFKC", char).lower()
        if not tag.startswith(spelled):
            return None
        if spelled == tag:
            return i + 1
    return None
