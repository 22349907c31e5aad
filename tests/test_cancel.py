"""Cancellation on the real engine (tiny model), mid-generation, through every door.

test_app_http.py and test_demo_callbacks.py cover the same paths on the fake engine; here the real
generation thread has to stop: a JSON API client that hangs up, a gradio_client job cancelled, a
Gradio stream dropped (the named /chat API and the page's Send event: a closed tab), and Stop in the
page's callbacks. The model is paced (tests/served.py PacedModel: 10 ms a token, no end-of-turn
token, 400 tokens) so each test acts mid-reply; the engine's counters say when generation ended.
The time from the cancel to active_generations == 0 is printed (run with -s to see it).
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from gradio_client import Client

from app.ui.chat_tab import respond, stop_turns
from app.ui.session import Session
from pipeline import LABELS
from tests.served import Consumer, PacedModel, event_id, wait_until

MAX_NEW_TOKENS = 400


@pytest.fixture(scope="module")
def engine(tiny_engine_with):
    return tiny_engine_with(chat_max_new_tokens=MAX_NEW_TOKENS)


def generating(engine, paced) -> bool:
    """Mid-reply: generation has started and produced at least two tokens (prefill + 2 forwards)."""
    return engine.active_generations == 1 and paced.forwards >= 3


def wait_cancelled(engine, cancelled_before: int, started: float, what: str) -> float:
    """Wait (bounded) for the generation to end as cancelled; the milliseconds it took."""
    wait_until(lambda: engine.active_generations == 0 and engine.generations_cancelled == cancelled_before + 1,
               timeout=20, what=f"{what} to end the generation")
    ms = (time.monotonic() - started) * 1000
    print(f"\n[cancel] {what}: generation ended {ms:.1f} ms after the cancel")
    return ms


def assert_served_normally(app, engine) -> None:
    url = app.local_url.rstrip("/")
    wait_until(lambda: not app.service.gate.busy and app.service.gate.waiting == 0, what="the model to be free")
    finished = engine.generations_finished
    response = httpx.post(f"{url}/api/infer", json={"text": "今天很开心"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["emotion_label"] in LABELS and isinstance(response.json()["chat_response"], str)
    assert engine.generations_finished == finished + 1 and engine.active_generations == 0


def test_a_json_client_that_hangs_up_mid_reply_ends_the_generation(app, engine):
    host, port = "127.0.0.1", int(app.local_url.rstrip("/").rsplit(":", 1)[1])
    body = json.dumps({"text": "讲一个很长的故事", "mode": "chat"}).encode()
    cancelled = engine.generations_cancelled
    with PacedModel(engine, per_token_s=0.01) as paced:
        sock = socket.create_connection((host, port))
        sock.sendall(b"POST /api/infer HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body))
        wait_until(lambda: generating(engine, paced), what="the reply to be under way")
        started = time.monotonic()
        sock.close()
        wait_cancelled(engine, cancelled, started, "JSON API client hang-up")
        assert paced.forwards < MAX_NEW_TOKENS  # it stopped early, not at the token limit
    assert_served_normally(app, engine)


def test_a_cancelled_gradio_client_job_ends_the_generation(app, engine):
    client = Client(app.local_url, verbose=False)
    cancelled = engine.generations_cancelled
    with PacedModel(engine, per_token_s=0.01) as paced:
        job = client.submit("讲一个很长的故事", [], api_name="/chat")
        wait_until(lambda: generating(engine, paced) and job.outputs(), what="streamed text")
        started = time.monotonic()
        job.cancel()
        wait_cancelled(engine, cancelled, started, "gradio_client job.cancel()")
        assert paced.forwards < MAX_NEW_TOKENS
    assert_served_normally(app, engine)
    assert client.predict("你好", [], api_name="/chat") is not None  # the same client goes on


def _run_event(client: httpx.Client, url: str, app, name: str, data: list, session_hash: str,
               until: str = "process_completed") -> None:
    """Join the queue with one event and read its stream until `until` (then leave the stream)."""
    joined = client.post(f"{url}/gradio_api/queue/join",
                         json={"data": data, "fn_index": event_id(url, name), "session_hash": session_hash})
    assert joined.status_code == 200, joined.text
    with client.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session_hash}) as stream:
        for line in stream.iter_lines():
            if until in line:
                assert '"success":false' not in line, line
                return
    raise AssertionError(f"{name}: the stream ended before {until}")


@pytest.mark.parametrize("event, data", [
    ("chat", ["讲一个很长的故事", []]),  # the named /chat API
    ("on_send", ["讲一个很长的故事", "chat", None]),  # the page's Send, then the tab closed
])
def test_a_dropped_gradio_stream_ends_the_generation(app, engine, event, data):
    url = app.local_url.rstrip("/")
    cancelled = engine.generations_cancelled
    with PacedModel(engine, per_token_s=0.01) as paced, httpx.Client(timeout=30) as client:
        _run_event(client, url, app, event, data, f"drop-{event}-{time.monotonic_ns()}", until="process_generating")
        wait_until(lambda: generating(engine, paced), what="the reply to be under way")
        started = time.monotonic()
    # Leaving the block closed the stream's connection: the client is gone.
    wait_cancelled(engine, cancelled, started, f"dropped Gradio stream, {event}")
    assert_served_normally(app, engine)


def test_stop_in_the_page_ends_the_generation(app, engine):
    service, session = app.service, Session()
    cancelled = engine.generations_cancelled
    with PacedModel(engine, per_token_s=0.01) as paced:
        consumer = Consumer(respond(service, "讲一个很长的故事", "chat", session))
        consumer.start()
        wait_until(lambda: generating(engine, paced) and len(consumer.updates) > 1, what="the streamed reply")
        started = time.monotonic()
        chat, _ = stop_turns(session)
        wait_cancelled(engine, cancelled, started, "Stop in the page")
        consumer.join(20)
        assert not consumer.is_alive() and consumer.error is None
        assert paced.forwards < MAX_NEW_TOKENS
    assert "（已停止）" in chat[-1]["content"]
    assert not service.gate.busy
    list(respond(service, "你好", "both", session))  # the same session goes on
    assert session.turns == [] and "回复" in session.display[-1]["content"]
    assert_served_normally(app, engine)
