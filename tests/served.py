"""Helpers for tests that serve the app in-process: a free loopback port, launch, and bounded waits."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Callable, Iterator

import httpx

import demo


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(engine, **settings: Any) -> Iterator[demo.DemoApp]:
    """The whole app (page, Gradio API, JSON API) on a free loopback port, healthy or 503-loading."""
    for attempt in range(3):
        app = demo.create_app(engine, demo.AppSettings(host="127.0.0.1", port=free_port(), **settings))
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


def _health(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code
    except httpx.TransportError:
        return None
