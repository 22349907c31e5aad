"""A fake engine with the real engine's API: answers instantly, records every call, stops on cancel."""

from __future__ import annotations

import threading
from typing import Any

from pipeline import LABELS, Mode, Sentiment, UserInputError
from pipeline.routing import route


class FakeChatStream:
    """Yields the reply's pieces; `gate` (if given) must be set before each piece after the first."""

    def __init__(self, pieces: list[str], gate: threading.Event | None, on_done):
        self._pieces = list(pieces)
        self._gate = gate
        self._on_done = on_done
        self._cancel = threading.Event()
        self._done = False
        self.text = ""
        self.finish_reason: str | None = None
        self.first_token_ms = 1.0
        self.latency_ms = 2.0
        self.new_tokens = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        if self._cancel.is_set():
            self._finish("cancelled")
            raise StopIteration
        if not self._pieces:
            self._finish("stop")
            raise StopIteration
        if self._gate is not None and self.new_tokens > 0:
            while not self._gate.wait(0.01):
                if self._cancel.is_set():
                    self._finish("cancelled")
                    raise StopIteration
        piece = self._pieces.pop(0)
        self.text += piece
        self.new_tokens += 1
        return piece

    @property
    def running(self) -> bool:
        return not self._done

    def _finish(self, reason: str) -> None:
        if not self._done:
            self._done = True
            self.finish_reason = reason
            self._on_done(self)

    def cancel(self) -> None:
        self._cancel.set()

    def close(self, timeout: float | None = None) -> None:
        self._cancel.set()
        self._finish("cancelled" if self._pieces else "stop")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self._cancel.set()


class FakeEngine:
    """Engine stand-in for UI tests: label from keywords, reply echoes the message in pieces."""

    model_name = "fake-model"

    def __init__(self, reply_pieces: list[str] | None = None, gate: threading.Event | None = None,
                 max_input_chars: int = 1000, classify_gate: threading.Event | None = None):
        self.calls: list[tuple[str, Any]] = []
        self.reply_pieces = reply_pieces
        self.gate = gate
        self.classify_gate = classify_gate
        self.classifying = threading.Event()
        self.max_input_chars = max_input_chars
        self.active_generations = 0
        self.generations_started = 0
        self.generations_finished = 0
        self.generations_cancelled = 0
        self._lock = threading.Lock()

    def clean_text(self, text: Any, what: str = "text") -> str:
        if not isinstance(text, str):
            raise UserInputError(f"{what} must be a string, not {type(text).__name__}")
        if not text.strip():
            raise UserInputError(f"{what} is empty: type something first")
        return text

    def encode_user_text(self, text: str) -> list[int]:
        if len(text) > self.max_input_chars:
            raise UserInputError(f"text is too long: {len(text)} characters; the limit is {self.max_input_chars}")
        return [ord(c) for c in text]

    def clean_history(self, history: Any) -> list[dict[str, str]]:
        if history is None:
            return []
        if not isinstance(history, list):
            raise UserInputError("history must be a list of messages")
        for i, m in enumerate(history):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                raise UserInputError(f"history[{i}] has an unknown role")
            if not isinstance(m.get("content"), str):
                raise UserInputError(f"history[{i}].content must be a string")
        return [{"role": m["role"], "content": m["content"]} for m in history]

    def route(self, text: str, default: Mode | str = Mode.BOTH):
        self.calls.append(("route", text))
        return route(text, Mode(default))

    def classify(self, text: str) -> Sentiment:
        """Label by keywords ("一般"/"还行": uncertain); with classify_gate, sets `classifying` and waits for the gate first."""
        text = self.clean_text(text)
        self.encode_user_text(text)
        self.calls.append(("classify", text))
        if self.classify_gate is not None:
            self.classifying.set()
            self.classify_gate.wait()
        negative = any(word in text for word in ("差", "坏", "失望", "糟"))
        label = LABELS[1] if negative else LABELS[0]
        other = LABELS[0] if negative else LABELS[1]
        if any(word in text for word in ("一般", "还行")):  # mixed: too close to call
            return Sentiment(label, 0.58, 1.5, {label: 0.58, other: 0.42}, uncertain=True)
        return Sentiment(label, 0.9, 1.5, {label: 0.9, other: 0.1})

    def chat(self, history: Any, message: str, max_new_tokens: int | None = None) -> FakeChatStream:
        history = self.clean_history(history)
        message = self.clean_text(message, "message")
        self.encode_user_text(message)
        self.calls.append(("chat", (history, message)))
        pieces = self.reply_pieces if self.reply_pieces is not None else ["回复", "：", message]
        with self._lock:
            self.active_generations += 1
            self.generations_started += 1
        return FakeChatStream(pieces, self.gate, self._done)

    def _done(self, stream: FakeChatStream) -> None:
        with self._lock:
            self.active_generations -= 1
            self.generations_finished += 1
            if stream.finish_reason == "cancelled":
                self.generations_cancelled += 1
