"""The model gate and the JSON API's request handling, without a server."""

from __future__ import annotations

import threading

import pytest

from pipeline import LABELS, Mode, UserInputError
from tests.fakes import FakeEngine
from tests.served import wait_until
from webapi import BUSY_MESSAGE, Busy, Cancelled, InferRequest, Job, ModelGate, ModelService, api_router


def test_gate_serves_jobs_in_arrival_order_one_at_a_time():
    gate = ModelGate(max_waiting=3)
    first = Job()
    gate.enqueue(first)
    gate.acquire(first)
    order, holders = [], []

    def run(name):
        with gate.hold(Job(), admitted=True):
            holders.append(gate.busy)
            order.append(name)

    threads = [threading.Thread(target=run, args=(name,)) for name in range(3)]
    for count, thread in enumerate(threads, start=1):
        thread.start()
        wait_until(lambda n=count: gate.waiting == n, what=f"{count} jobs to queue")
    assert order == []  # all wait while the first job holds the slot
    gate.release(first)
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2] and all(holders)
    assert not gate.busy and gate.waiting == 0


def test_gate_refuses_a_job_when_max_waiting_already_wait():
    gate = ModelGate(max_waiting=1)
    holder, waiter = Job(), Job()
    gate.enqueue(holder)
    gate.acquire(holder)
    gate.enqueue(waiter)
    with pytest.raises(Busy, match=BUSY_MESSAGE):
        gate.enqueue(Job())
    gate.enqueue(Job(), admitted=True)  # admitted by Gradio's own bounded queue: never refused here
    assert gate.waiting == 2


def test_cancelling_a_waiting_job_removes_it_from_the_line():
    gate = ModelGate(max_waiting=2)
    holder, waiter = Job(), Job()
    gate.enqueue(holder)
    gate.acquire(holder)
    outcome = []

    def wait():
        try:
            with gate.hold(waiter):
                outcome.append("ran")
        except Cancelled:
            outcome.append("cancelled")

    t = threading.Thread(target=wait)
    t.start()
    wait_until(lambda: gate.waiting == 1, what="the waiter to queue")
    waiter.cancel()
    t.join(10)
    assert outcome == ["cancelled"]
    assert gate.waiting == 0 and gate.busy  # the holder still holds it


def test_job_cancel_stops_its_attached_stream():
    engine = FakeEngine(gate=threading.Event())
    job = Job()
    stream = job.attach(engine.chat([], "你好"))
    assert next(stream) == "回复"
    job.cancel()
    assert list(stream) == []
    assert stream.finish_reason == "cancelled" and engine.generations_cancelled == 1


@pytest.mark.parametrize("body, message", [
    (b"", "not valid JSON"),
    (b"{", "not valid JSON"),
    (b"\xff\xfe", "UTF-8"),
    (b"[1, 2]", "JSON object"),
    (b'"text"', "JSON object"),
    (b"{}", '"text" is required'),
    (b'{"text": 1}', '"text" must be a string'),
    (b'{"text": null}', '"text" must be a string'),
    (b'{"text": "hi", "history": "x"}', '"history" must be a list'),
    (b'{"text": "hi", "history": {}}', '"history" must be a list'),
    (b'{"text": "hi", "mode": "sing"}', '"mode" must be one of'),
    (b'{"text": "hi", "mode": 1}', '"mode" must be one of'),
    (b'{"text": "hi", "histroy": []}', "unknown fields histroy"),
    (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
])
def test_parse_infer_refuses_bad_bodies_with_a_reason(body, message):
    with pytest.raises(UserInputError, match=message):
        ModelService(FakeEngine(), 4).parse_infer(body)


def test_parse_infer_defaults_history_and_mode():
    request = ModelService(FakeEngine(), 4).parse_infer('{"text": "很好"}'.encode())
    assert request == InferRequest("很好", [], Mode.BOTH)


def test_infer_runs_the_modes_and_times_them():
    engine = FakeEngine()
    service = ModelService(engine, 4)
    both = service.infer(InferRequest("这部电影太差了", [], Mode.BOTH), Job())
    assert both["emotion_label"] == LABELS[1] and both["confidence"] == pytest.approx(0.9)
    assert both["uncertain"] is False
    assert both["chat_response"] == "回复：这部电影太差了"
    mixed = service.infer(InferRequest("还行，有点差", [], Mode.EMOTION), Job())
    assert (mixed["emotion_label"], mixed["confidence"], mixed["uncertain"]) == (LABELS[1], 0.58, True)
    assert set(both["inference_time_ms"]) == {"emotion", "chat", "total"}
    assert all(v is not None for v in both["inference_time_ms"].values())
    emotion = service.infer(InferRequest("#CHAT# 你好", [], Mode.EMOTION), Job())  # the typed tag wins
    assert emotion["emotion_label"] is None and emotion["uncertain"] is None and emotion["chat_response"] == "回复：你好"
    assert emotion["inference_time_ms"]["emotion"] is None


def test_infer_while_loading_says_so():
    with pytest.raises(UserInputError, match="still loading"):
        ModelService(None, 4).infer(InferRequest("hi", [], Mode.BOTH), Job())


def test_an_unexpected_failure_still_answers_in_the_api_error_shape():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    engine = FakeEngine()

    def broken(text):
        raise RuntimeError("out of memory")

    engine.classify = broken
    service = ModelService(engine, 4)
    client = TestClient(FastAPI(routes=api_router(service).routes))
    response = client.post("/api/infer", json={"text": "你好"})
    assert response.status_code == 500 and "internal error" in response.json()["error"]
    assert "memory" not in response.text  # internals stay in the log
    assert not service.gate.busy  # the model is handed on
