"""Qwen All-in-One's engine: one Qwen chat model that classifies sentiment and chats, by prompt."""

from .chat import ChatStream
from .engine import Engine, load_engine
from .errors import UserInputError, WeightsNotFoundError
from .prompts import LABEL_EMOJI, LABELS
from .routing import Mode, Routed, route
from .sentiment import Sentiment
from .settings import Settings

__all__ = [
    "ChatStream", "Engine", "LABELS", "LABEL_EMOJI", "Mode", "Routed", "Sentiment", "Settings",
    "UserInputError", "WeightsNotFoundError", "load_engine", "route",
]
