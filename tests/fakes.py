"""A fake engine with the real engine's API: answers instantly, records every call, stops on cancel."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from pipeline import LABELS, Request, Sentiment, prepare
from pipeline.chat import GenerationCounts


class FakeChatStream:
    """Yields the reply's pieces; `gate` (if given) must be set before each piece after the first."""

    def __init__(self, pieces: list[str], gate: threading.Event | None, on_done, end_reason: str = "stop"):
        self._pieces = list(pieces)
        self._end_reason = end_reason
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
            self._finish(self._end_reason)
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
        self._finish("cancelled" if self._pieces else self._end_reason)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self._cancel.set()


class FakeEngine(GenerationCounts):
    """Engine stand-in for UI tests: the real request rules with one token per character, a label from
    keywords, a reply that echoes the message in pieces (ending for finish_reason: "stop", "loop", "length")."""

    model_name = "fake-model"
    linear_path = "fake: no linear layers"

    def __init__(self, reply_pieces: list[str] | None = None, gate: threading.Event | None = None,
                 max_input_chars: int = 1000, classify_gate: threading.Event | None = None,
                 finish_reason: str = "stop", batch_size: int = 4, batch_max_texts: int = 5000,
                 slice_gate: threading.Event | None = None):
        super().__init__()
        self.settings = SimpleNamespace(sentiment_batch_size=batch_size, batch_max_texts=batch_max_texts)
        self.slice_gate = slice_gate
        self.slicing = threading.Event()
        self.calls: list[tuple[str, Any]] = []
        self.reply_pieces = reply_pieces
        self.gate = gate
        self.classify_gate = classify_gate
        self.classifying = threading.Event()
        self.max_input_tokens = self.max_input_chars = max_input_chars
        self.finish_reason = finish_reason

    # pipeline.request.Tokenizing, one token per character
    def message_ids(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    review_ids = message_ids

    def prompt_ids(self, history, message, message_ids):
        return [i for m in history for i in self.message_ids(m["content"])] + list(message_ids), 0

    def prepare(self, text: Any, history: Any = None, mode: Any = None, what: str = "text", tags: bool = True) -> Request:
        return prepare(self, text, history, mode, what, tags)

    def classify(self, request: Request) -> Sentiment:
        """Label by keywords ("一般"/"还行": uncertain); with classify_gate, sets `classifying` and waits for the gate first."""
        text = request.text
        self.calls.append(("classify", text))
        if self.classify_gate is not None:
            self.classifying.set()
            self.classify_gate.wait()
        return keyword_sentiment(text)

    def classify_batch(self, reviews_ids) -> list[Sentiment]:
        """keyword labels of several texts (ids are characters); with slice_gate, sets `slicing` and waits first."""
        texts = ["".join(map(chr, ids)) for ids in reviews_ids]
        self.calls.append(("classify_batch", texts))
        if self.slice_gate is not None:
            self.slicing.set()
            self.slice_gate.wait()
            self.slice_gate.clear()
        return [keyword_sentiment(text) for text in texts]

    def chat(self, request: Request, max_new_tokens: int | None = None) -> FakeChatStream:
        history, message = list(request.history), request.text
        self.calls.append(("chat", (history, message)))
        pieces = self.reply_pieces if self.reply_pieces is not None else ["回复", "：", message]
        self._generation_started()
        return FakeChatStream(pieces, self.gate, self._generation_done, self.finish_reason)


def keyword_sentiment(text: str) -> Sentiment:
    """负面 if the text has a word of complaint, else 正面; "一般"/"还行": uncertain."""
    negative = any(word in text for word in ("差", "坏", "失望", "糟"))
    label = LABELS[1] if negative else LABELS[0]
    other = LABELS[0] if negative else LABELS[1]
    if any(word in text for word in ("一般", "还行")):  # mixed: too close to call
        return Sentiment(label, 0.58, 1.5, {label: 0.58, other: 0.42}, uncertain=True)
    return Sentiment(label, 0.9, 1.5, {label: 0.9, other: 0.1})
