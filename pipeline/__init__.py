"""Qwen All-in-One's engine: one Qwen chat model that classifies sentiment and chats, by prompt."""

from .chat import ChatStream
from .engine import Engine, load_engine
from .errors import ModelCompatibilityError, UserInputError, WeightsNotFoundError
from .prompts import LABEL_EMOJI, LABELS, UNCERTAIN_EMOJI
from .request import Request, prepare
from .routing import Mode, Routed, route
from .sentiment import Sentiment
from .settings import Settings

__all__ = [
    "ChatStream", "Engine", "LABELS", "LABEL_EMOJI", "UNCERTAIN_EMOJI", "Mode", "Request", "Routed", "Sentiment", "Settings",
    "ModelCompatibilityError", "UserInputError", "WeightsNotFoundError", "load_engine", "prepare", "route",
]
