"""The JSON API's request handling (body, checks, result shape, errors), without a server."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.gate import Job
from app.service import ModelService
from pipeline import LABELS, Mode, UserInputError
from tests.fakes import FakeEngine
from app.http_api import api_router, infer_result, parse_body


def prepared(body: bytes):
    """What /api/infer makes of a body before it waits for the model: parsed, then prepared."""
    fields = parse_body(body)
    return ModelService(FakeEngine(), 4).prepare(fields.text, fields.history, fields.mode)


@pytest.mark.parametrize("body, message", [
    (b"", "not valid JSON"),
    (b"{", "not valid JSON"),
    (b"\xff\xfe", "UTF-8"),
    (b"[1, 2]", "JSON object"),
    (b'"text"', "JSON object"),
    (b"{}", '"text" is required'),
    (b'{"text": 1}', '"text" must be a string, not a number'),
    (b'{"text": null}', '"text" must be a string, not null'),
    (b'{"text": "hi", "history": "x"}', '"history" must be a list'),
    (b'{"text": "hi", "history": {}}', '"history" must be a list'),
    (b'{"text": "hi", "history": [{"role": "system", "content": "x"}]}', "history\\[0\\] has role 'system'"),
    (b'{"text": "hi", "mode": "sing"}', '"mode" must be one of'),
    (b'{"text": "hi", "mode": 1}', '"mode" must be one of'),
    (b'{"text": "hi", "histroy": []}', "unknown fields histroy"),
    (b'{"text": " "}', "text is empty"),
    (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
])
def test_bad_bodies_are_refused_with_a_reason_before_any_waiting(body, message):
    with pytest.raises(UserInputError, match=message):
        prepared(body)


def test_history_and_mode_default_to_none_and_both():
    request = prepared('{"text": "很好"}'.encode())
    assert (request.mode, request.text, request.history) == (Mode.BOTH, "很好", ())
    assert request.review_ids is not None and request.prompt_ids is not None


@pytest.mark.parametrize("text, mode, label, uncertain, reply", [
    ("这部电影太差了", Mode.BOTH, LABELS[1], False, "回复：这部电影太差了"),
    ("还行，有点差", Mode.EMOTION, LABELS[1], True, None),
    ("#CHAT# 你好", Mode.EMOTION, None, None, "回复：你好"),  # the typed tag wins
])
def test_the_result_has_the_label_the_reply_and_their_times(text, mode, label, uncertain, reply):
    service = ModelService(FakeEngine(), 4)
    result = infer_result(service.answer(service.prepare(text, mode=mode), Job()))
    assert (result["emotion_label"], result["uncertain"], result["chat_response"]) == (label, uncertain, reply)
    times = result["inference_time_ms"]
    assert set(times) == {"emotion", "chat", "total"}
    assert (times["emotion"] is None, times["chat"] is None) == (label is None, reply is None)
    assert times["total"] == pytest.approx(sum(t for t in (times["emotion"], times["chat"]) if t is not None))


def test_while_loading_the_api_says_so_with_503():
    client = TestClient(FastAPI(routes=api_router(ModelService(None, 4)).routes))
    response = client.post("/api/infer", json={"text": "hi"})
    assert response.status_code == 503 and "still loading" in response.json()["error"]
    assert client.post("/api/infer", content=b"{").status_code == 400  # a bad body is still the caller's


def test_an_unexpected_failure_still_answers_in_the_api_error_shape():
    engine = FakeEngine()

    def broken(request):
        raise RuntimeError("out of memory")

    engine.classify = broken
    service = ModelService(engine, 4)
    client = TestClient(FastAPI(routes=api_router(service).routes))
    response = client.post("/api/infer", json={"text": "你好"})
    assert response.status_code == 500 and "internal error" in response.json()["error"]
    assert "memory" not in response.text  # internals stay in the log
    assert not service.gate.busy and service.gate.waiting == 0  # the model is handed on
