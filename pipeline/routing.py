"""Which role(s) a message asks for: the #EMOTION# / #CHAT# prefixes, or an explicit mode."""

from __future__ import annotations

import enum
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
    """Strip a leading #EMOTION# or #CHAT# tag (any case) and return the mode it names."""
    stripped = text.lstrip()
    for tag, mode in _TAGS.items():
        if stripped[: len(tag)].lower() == tag:
            return Routed(mode, stripped[len(tag):].strip())
    return Routed(default, text.strip())
