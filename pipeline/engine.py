"""The one model serving both roles: validation, the model lock, sentiment and chat."""

from __future__ import annotations

import copy
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from . import chat_format, packing
from .chat import ChatStream, trim_history
from .errors import UserInputError
from .loading import load_model
from .routing import Mode, Routed, route
from .sentiment import Sentiment, SentimentScorer
from .settings import Settings

log = logging.getLogger(__name__)

ROLES = ("user", "assistant")
# C0/C1 controls other than tab, newline and carriage return carry no meaning for the model.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# A token covers at most this many characters in practice; longer text is refused before tokenizing.
_MAX_CHARS_PER_TOKEN = 16


class Engine:
    """One loaded model that classifies sentiment and chats, one call at a time.

    The model runs under a single lock: on a small CPU two interleaved forwards are no faster than
    two in a row, and the lock keeps each call's latency its own. Callers may use it from any
    thread; a chat stream holds the lock from its first token to its last.
    """

    def __init__(self, model, tokenizer, settings: Settings):
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.model_name = Path(settings.model_dir).name
        self._lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self.active_generations = 0
        self.generations_started = 0
        self.generations_finished = 0
        self.generations_cancelled = 0
        self.context_window = int(getattr(model.config, "max_position_embeddings", 32768))
        self.generation_config = self._generation_config()
        self.eos_ids = set(self.generation_config.eos_token_id)
        # Layers are packed before the scorer caches its prefix, so the cache comes from the same
        # kernels as every request; the head after, so the scorer copies its two rows from a dense one.
        self.packed_linears = packing.pack_decoder_linears(model) if settings.pack_weights else 0
        with self._lock:
            self.sentiment = SentimentScorer(model, tokenizer, settings.sentiment_prompt)
        if settings.pack_weights and packing.pack_output_head(model):
            self.packed_linears += 1
        if self.packed_linears:
            log.info("packed %d linear layers for oneDNN", self.packed_linears)
        self._chat_system_ids = chat_format.encode_messages(
            tokenizer, [{"role": "system", "content": settings.chat_system_prompt}], add_generation_prompt=False)
        # Template tokens around one message (e.g. "<|im_start|>user\n" ... "<|im_end|>\n").
        pieces = chat_format.encode_pieces(
            tokenizer, [{"role": "system", "content": "x"}, {"role": "user", "content": "x"}], add_generation_prompt=False)
        self._message_overhead = len(pieces[2]) + len(pieces[4])

    def _generation_config(self):
        config = copy.deepcopy(self.model.generation_config)
        s = self.settings
        for name in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty"):
            if getattr(s, name) is not None:
                setattr(config, name, getattr(s, name))
        eos = config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        for token in ("<|im_end|>", "<|endoftext|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id and token_id not in eos:
                eos.append(token_id)
        config.eos_token_id = eos
        if config.pad_token_id is None:
            config.pad_token_id = eos[0]
        config.max_new_tokens = s.chat_max_new_tokens
        return config

    # -- validation ---------------------------------------------------------------------------

    def clean_text(self, text: Any, what: str = "text") -> str:
        """The text with controls removed and lone surrogates replaced; UserInputError if unusable."""
        if not isinstance(text, str):
            raise UserInputError(f"{what} must be a string, not {type(text).__name__}")
        text = _SURROGATE.sub("\ufffd", _CONTROL.sub("", text))
        if not text.strip():
            raise UserInputError(f"{what} is empty: type something first")
        return text

    def encode_user_text(self, text: str) -> list[int]:
        """Token ids of one user text, or UserInputError saying the limit if it is too long."""
        limit = self.settings.max_input_tokens
        if len(text) > limit * _MAX_CHARS_PER_TOKEN:
            raise UserInputError(
                f"text is too long: {len(text)} characters; the limit is {limit} tokens")
        ids = chat_format.encode_text(self.tokenizer, text)
        if len(ids) > limit:
            raise UserInputError(f"text is too long: {len(ids)} tokens; the limit is {limit} tokens")
        return ids

    def clean_history(self, history: Any) -> list[dict[str, str]]:
        """History as [{"role": "user"|"assistant", "content": str}], or UserInputError."""
        if history is None:
            return []
        if not isinstance(history, (list, tuple)):
            raise UserInputError(f"history must be a list of messages, not {type(history).__name__}")
        cleaned = []
        for i, message in enumerate(history):
            if not isinstance(message, dict):
                raise UserInputError(f"history[{i}] must be an object with role and content")
            role, content = message.get("role"), message.get("content")
            if role not in ROLES:
                raise UserInputError(f"history[{i}] has role {role!r}; expected one of {', '.join(ROLES)}")
            if not isinstance(content, str):
                raise UserInputError(f"history[{i}].content must be a string, not {type(content).__name__}")
            content = _SURROGATE.sub("\ufffd", _CONTROL.sub("", content))
            if content.strip():
                cleaned.append({"role": role, "content": content})
        return cleaned

    # -- the two roles ------------------------------------------------------------------------

    def route(self, text: str, default: Mode | str = Mode.BOTH) -> Routed:
        """Mode and text for a message that may start with #EMOTION# or #CHAT#."""
        return route(text, Mode(default))

    def classify(self, text: str) -> Sentiment:
        """The sentiment of text: one of LABELS with its confidence."""
        ids = self.encode_user_text(self.sentiment.quote(self.clean_text(text)))
        with self._lock:
            started = time.perf_counter()
            log_odds = self.sentiment.question_log_odds(ids)
            latency_ms = (time.perf_counter() - started) * 1000
        return self.sentiment.parse(log_odds, latency_ms)

    def build_chat_prompt(self, history: Any, message: str) -> tuple[list[int], int]:
        """(prompt ids, number of history messages dropped) for history + message within the budget."""
        message = self.clean_text(message, "message")
        message_ids = self.encode_user_text(message)
        history = self.clean_history(history)
        budget = min(self.settings.history_token_budget,
                     self.context_window - self.settings.chat_max_new_tokens - len(self._chat_system_ids) - 8)
        if len(message_ids) + self._message_overhead > budget:
            raise UserInputError(
                f"message is too long for the context: {len(message_ids)} tokens; the limit is "
                f"{max(0, budget - self._message_overhead)} tokens")
        lens = self._history_token_lens(history, budget)
        keep_from = trim_history(lens, len(message_ids) + self._message_overhead, budget)
        while keep_from < len(history) and history[keep_from]["role"] != "user":
            keep_from += 1  # a conversation starts with the user
        messages = [{"role": "system", "content": self.settings.chat_system_prompt},
                    *history[keep_from:], {"role": "user", "content": message}]
        return chat_format.encode_messages(self.tokenizer, messages, add_generation_prompt=True), keep_from

    def _history_token_lens(self, history: Sequence[dict], budget: int) -> list[int]:
        """Tokens per message, newest first until the budget is spent; older ones count as too long."""
        lens = [budget + 1] * len(history)
        spent = 0
        for i in range(len(history) - 1, -1, -1):
            content = history[i]["content"]
            if len(content) > budget * _MAX_CHARS_PER_TOKEN:
                break
            lens[i] = len(chat_format.encode_text(self.tokenizer, content)) + self._message_overhead
            spent += lens[i]
            if spent > budget:
                break
        return lens

    def chat(self, history: Any, message: str, max_new_tokens: int | None = None) -> ChatStream:
        """Start a reply to message after history; returns a stream of text pieces."""
        prompt_ids, dropped = self.build_chat_prompt(history, message)
        if dropped:
            log.info("chat: dropped %d oldest history messages to fit the budget", dropped)
        config = self.generation_config
        if max_new_tokens is not None:
            config = copy.deepcopy(config)
            config.max_new_tokens = max(1, min(int(max_new_tokens), self.settings.chat_max_new_tokens))
        input_ids = torch.tensor([prompt_ids])

        def run(streamer, stop):
            with self._lock:
                if stop.event.is_set():  # cancelled while waiting for the model: skip the prefill too
                    streamer.end()
                    return input_ids
                with torch.inference_mode():
                    return self.model.generate(
                        input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                        generation_config=config, streamer=streamer, stopping_criteria=[stop])

        with self._counter_lock:
            self.active_generations += 1
            self.generations_started += 1
        return ChatStream(run, self.tokenizer, len(prompt_ids), self.eos_ids, self._generation_done)

    def _generation_done(self, stream) -> None:
        with self._counter_lock:
            self.active_generations -= 1
            self.generations_finished += 1
            if stream.finish_reason == "cancelled":
                self.generations_cancelled += 1


def load_engine(model_dir: str | Path | None = None, **overrides: Any) -> Engine:
    """Load the model once and return the engine; settings from env vars, then these overrides."""
    settings = Settings.from_env(model_dir=model_dir, **overrides)
    model, tokenizer = load_model(settings)
    return Engine(model, tokenizer, settings)
