"""Streaming chat: history trimmed to a token budget, generation in a thread that can be stopped."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

import torch
from transformers import StoppingCriteria, TextIteratorStreamer


class StopOnEvent(StoppingCriteria):
    """Ends generate() at the next token once the event is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


class StopOnLoop(StoppingCriteria):
    """Ends generate() once the reply's last tokens repeat one phrase over and over (`looped` says so)."""

    def __init__(self, prompt_len: int, min_tokens: int):
        self.prompt_len, self.min_tokens = prompt_len, min_tokens
        self.looped = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_len
        if generated >= self.min_tokens:
            tail = input_ids[0, -min(generated, LOOP_COPIES * LOOP_MAX_PERIOD + self.min_tokens):].tolist()
            self.looped = self.looped or repeating_period(tail, self.min_tokens) is not None
        return torch.full((input_ids.shape[0],), self.looped, dtype=torch.bool)


class BetweenTokens(StoppingCriteria):
    """Calls a function after each generated token (the engine lets queued labels in there); never stops."""

    def __init__(self, callback: Callable[[], None]):
        self.callback = callback

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.callback()
        return torch.zeros((input_ids.shape[0],), dtype=torch.bool)


# A loop is one phrase of up to LOOP_MAX_PERIOD tokens repeated at least LOOP_COPIES times in a row.
LOOP_COPIES = 4
LOOP_MAX_PERIOD = 64


def repeating_period(tokens: list[int], min_tokens: int) -> int | None:
    """The period p if tokens end in a phrase of p tokens repeated over max(LOOP_COPIES * p, min_tokens) tokens."""
    for period in range(1, LOOP_MAX_PERIOD + 1):
        span = max(LOOP_COPIES * period, min_tokens)
        if span > len(tokens):
            break
        tail = tokens[-span:]
        if tail[period:] == tail[:-period]:
            return period
    return None


class _Generation:
    """One generate() call in its own thread; holds no reference to the reader's ChatStream."""

    def __init__(self, run, tokenizer, prompt_len: int, eos_ids: set[int], on_done, loop_tokens: int = 0):
        self.cancel = threading.Event()
        self.loop = StopOnLoop(prompt_len, loop_tokens) if loop_tokens else None
        self.streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.started = time.perf_counter()
        self.error: BaseException | None = None
        self.new_tokens = 0
        self.finish_reason: str | None = None
        self.latency_ms: float | None = None
        self._prompt_len, self._eos_ids, self._on_done = prompt_len, eos_ids, on_done
        self.thread = threading.Thread(target=self._run, args=(run,), name="chat-generate", daemon=True)
        self.thread.start()

    def _run(self, run) -> None:
        try:
            stops = [StopOnEvent(self.cancel)] + ([self.loop] if self.loop else [])
            sequences = run(self.streamer, stops, self.cancel)
            generated = sequences[0, self._prompt_len:].tolist()
            self.new_tokens = len(generated)
            if self.cancel.is_set():
                self.finish_reason = "cancelled"
            elif self.loop is not None and self.loop.looped:
                self.finish_reason = "loop"
            elif generated and generated[-1] in self._eos_ids:
                self.finish_reason = "stop"
            else:
                self.finish_reason = "length"
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which re-raises it
            self.error = exc
            self.finish_reason = "error"
            self.streamer.end()
        finally:
            self.latency_ms = (time.perf_counter() - self.started) * 1000
            self._on_done(self)


class ChatStream:
    """An iterator of reply text pieces from a generation running in its own thread.

    Stop it with cancel() (returns at once) or close() (also waits for the thread); leaving a
    `with` block closes it, and dropping the stream cancels it. After it ends: text, finish_reason
    ("stop" at the end-of-turn token, "length" at the token limit, "loop" when the reply kept
    repeating one phrase (loop_tokens > 0: see StopOnLoop), "cancelled", "error"), new_tokens,
    first_token_ms and latency_ms.

    run(streamer, stopping_criteria, cancelled) runs generate() and returns its sequences.
    """

    def __init__(self, run: Callable[[TextIteratorStreamer, list[StoppingCriteria], threading.Event], torch.Tensor],
                 tokenizer, prompt_len: int, eos_ids: set[int], on_done: Callable[[_Generation], None],
                 loop_tokens: int = 0):
        self._generation = _Generation(run, tokenizer, prompt_len, eos_ids, on_done, loop_tokens)
        self._pieces: list[str] = []
        self.first_token_ms: float | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        generation = self._generation
        for piece in generation.streamer:
            if not piece:
                continue
            if self.first_token_ms is None:
                self.first_token_ms = (time.perf_counter() - generation.started) * 1000
            self._pieces.append(piece)
            return piece
        generation.thread.join()
        if generation.error is not None:
            raise generation.error
        raise StopIteration

    @property
    def text(self) -> str:
        """The reply so far."""
        return "".join(self._pieces)

    @property
    def running(self) -> bool:
        """Whether the generation thread is still working."""
        return self._generation.thread.is_alive()

    @property
    def finish_reason(self) -> str | None:
        return self._generation.finish_reason

    @property
    def new_tokens(self) -> int:
        return self._generation.new_tokens

    @property
    def latency_ms(self) -> float | None:
        return self._generation.latency_ms

    def cancel(self) -> None:
        """Ask generation to stop at its next token; returns at once."""
        self._generation.cancel.set()

    def close(self, timeout: float | None = None) -> None:
        """Stop generation and wait for its thread to end (timeout in seconds, None: as long as it takes)."""
        self._generation.cancel.set()
        self._generation.thread.join(timeout)

    def __enter__(self) -> "ChatStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        # A reader that disconnects just drops the stream: don't leave the CPU generating for nobody.
        self._generation.cancel.set()


class GenerationCounts:
    """Counters of an engine's chat generations (for /healthz and tests); safe from any thread."""

    def __init__(self) -> None:
        self._counts_lock = threading.Lock()
        self.active_generations = 0
        self.generations_started = 0
        self.generations_finished = 0
        self.generations_cancelled = 0

    def _generation_started(self) -> None:
        with self._counts_lock:
            self.active_generations += 1
            self.generations_started += 1

    def _generation_done(self, stream) -> None:
        with self._counts_lock:
            self.active_generations -= 1
            self.generations_finished += 1
            if stream.finish_reason == "cancelled":
                self.generations_cancelled += 1


def trim_history(history_lens: list[int], message_len: int, budget: int) -> int:
    """How many of the oldest history messages to drop so history + message fits in budget.

    Drops oldest-first: the index returned is the first message kept.
    """
    total = message_len
    keep_from = len(history_lens)
    for i in range(len(history_lens) - 1, -1, -1):
        if total + history_lens[i] > budget:
            break
        total += history_lens[i]
        keep_from = i
    return keep_from
