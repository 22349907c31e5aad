"""Errors meant for people: each carries a message that can be shown as it is."""

from __future__ import annotations


class UserInputError(ValueError):
    """The caller's text, history or arguments cannot be served; the message says why (in English).

    `chinese` is the same for the page (pipeline.messages.refusal fills both); errors raised with
    plain English (settings, CLI flags) show that. `key` names the refusal (messages.REFUSALS), if any,
    and `params` holds the figures it was said with.
    """

    def __init__(self, message: str, chinese: str | None = None, key: str | None = None,
                 params: dict | None = None):
        super().__init__(message)
        self.chinese = chinese or message
        self.key = key
        self.params = params or {}  # the refusal's figures (chars, limit_chars, ...), for other wordings of it


class WeightsNotFoundError(FileNotFoundError):
    """The model folder is missing or incomplete; the message names it and how to fill it."""


class ModelCompatibilityError(RuntimeError):
    """The model loads but cannot serve a role: its chat template or tokenizer does not fit the prompts."""
