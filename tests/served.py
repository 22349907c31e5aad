"""Helpers the tests share: bounded waits, a generator consumer, an async collector, serving the app
in-process on a free loopback port, and engine wrappers that record what reached the model or slow it down."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Callable, Iterator

import httpx

import demo
from app.gate import Job
from app.server import App, ServerSettings


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll predicate until it returns something truthy; AssertionError after timeout seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        pause.wait(0.01)


class Consumer(threading.Thread):
    """Iterates a generator the way Gradio does, in another thread, recording each update."""

    def __init__(self, generator):
        super().__init__(daemon=True)
        self.generator, self.updates, self.error = generator, [], None

    def run(self):
        try:
            for update in self.generator:
                self.updates.append(update)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc


def collect(agen) -> list:
    """Everything an async generator yields, run to its end."""
    import asyncio

    async def run():
        return [item async for item in agen]

    return asyncio.run(run())


def hold_model(gate, quick: bool = False) -> Job:
    """A job that holds the model gate (as a long reply would, or a label if quick) until it is cancelled."""
    job = Job()
    gate.admit(job)
    turn = gate.turn(job, quick)
    turn.__enter__()
    job.on_cancel(lambda: turn.__exit__(None, None, None))  # also keeps the turn alive until then
    return job


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(engine, **settings: Any) -> Iterator[App]:
    """The whole app (page, Gradio API, JSON API) on a free loopback port, healthy or 503-loading."""
    for attempt in range(3):
        app = demo.create_app(engine, ServerSettings(host="127.0.0.1", port=free_port(), **settings))
        try:
            app.launch(prevent_thread_lock=True, quiet=True)
            break
        except OSError:  # the port was taken between free_port() and the bind
            if attempt == 2:
                raise
    try:
        url = app.local_url.rstrip("/")
        wait_until(lambda: _health(url) in ((200, 503) if engine is None else (200,)), what="/healthz")
        yield app
    finally:
        app.close()


def event_id(url: str, api_name: str) -> int:
    """The id of the page's event named api_name, from the config the page itself loads (GET /config)."""
    dependencies = httpx.get(f"{url.rstrip('/')}/config", timeout=10).json()["dependencies"]
    return next(d["id"] for d in dependencies if d["api_name"] == api_name)


def _health(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code
    except httpx.TransportError:
        return None


class RecordingEngine:
    """An engine (real or fake) that also records what reached the model.

    `classified`: (text, token ids) of each classify; `prompts`: the prompt ids of each chat;
    `chatted`: each chat's message. Everything else is the wrapped engine's own, counters included.
    """

    def __init__(self, engine):
        self._engine = engine
        self._record_lock = threading.Lock()
        self.classified: list[tuple[str, list[int]]] = []
        self.prompts: list[list[int]] = []
        self.chatted: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def classify(self, request):
        if isinstance(request, str):
            request = self._engine.prepare(request, mode="emotion", tags=False)
        result = self._engine.classify(request)
        with self._record_lock:
            self.classified.append((request.text, list(request.review_ids)))
        return result

    def chat(self, request, max_new_tokens=None):
        stream = self._engine.chat(request, max_new_tokens)
        with self._record_lock:
            self.prompts.append(list(request.prompt_ids))
            self.chatted.append(request.text)
        return stream

    def forget(self) -> None:
        with self._record_lock:
            self.classified.clear()
            self.prompts.clear()
            self.chatted.clear()


class PacedModel:
    """Makes a real engine's model slow and long-winded, so a test can act mid-generation.

    Each forward pass first waits up to `per_token_s` (no wait once `release` is set), and the
    end-of-turn tokens get no probability, so a reply runs to the engine's token limit unless it is
    cancelled. `forwards` counts the passes: prefill + one per generated token. Use as a context manager.
    """

    def __init__(self, engine, per_token_s: float = 0.02):
        self.model = engine.model
        self.eos_ids = sorted(engine.eos_ids)
        self.per_token_s = per_token_s
        self.release = threading.Event()
        self.forwards = 0
        self._hooks: list = []

    def _before(self, module, args, kwargs):
        self.forwards += 1
        self.release.wait(self.per_token_s)

    def _after(self, module, args, kwargs, output):
        output.logits[..., self.eos_ids] = float("-inf")
        return output

    def __enter__(self) -> "PacedModel":
        self.release.clear()
        self.forwards = 0
        self._hooks = [self.model.register_forward_pre_hook(self._before, with_kwargs=True),
                       self.model.register_forward_hook(self._after, with_kwargs=True)]
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
