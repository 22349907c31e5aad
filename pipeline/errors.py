"""Errors meant for people: each carries a message that can be shown as it is."""


class UserInputError(ValueError):
    """The caller's text, history or arguments cannot be served; the message says why."""


class WeightsNotFoundError(FileNotFoundError):
    """The model folder is missing or incomplete; the message names it and how to fill it."""


class ModelCompatibilityError(RuntimeError):
    """The model loads but cannot serve a role: its chat template or tokenizer does not fit the prompts."""
