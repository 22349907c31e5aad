"""The launched app over HTTP and through gradio_client: /healthz, /api/infer, the named API, busy, share."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading

import gradio
import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import demo
import pipeline
from pipeline import LABELS
from tests.fakes import FakeEngine
from app.gate import BUSY_MESSAGE
from tests.served import hold_model, serve, wait_until


@pytest.fixture(scope="module")
def engine(tiny_engine):
    """`app` (conftest.py) serves the tiny real model, with a small body limit to test it."""
    return tiny_engine


@pytest.fixture(scope="module")
def served_settings() -> dict:
    return {"queue_max_size": 4, "api_max_body_bytes": 64 * 1024}


@pytest.fixture(scope="module")
def client(url) -> Client:
    return Client(url, verbose=False)


def infer(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/api/infer", json=body, timeout=60)


def test_healthz_names_the_loaded_model(url, tiny_engine):
    response = httpx.get(f"{url}/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["model"] == tiny_engine.model_name
    assert response.json()["linear_layers"] == tiny_engine.linear_path  # which kernels the model runs on


def test_healthz_is_503_until_the_model_is_loaded():
    with serve(None) as app:
        url = app.local_url.rstrip("/")
        response = httpx.get(f"{url}/healthz")
        assert response.status_code == 503 and "loading" in response.json()["error"]
        response = infer(url, text="你好")
        assert response.status_code == 503 and "loading" in response.json()["error"]


def test_infer_both_gives_label_confidence_reply_and_times(url):
    response = infer(url, text="这家餐厅的菜很好吃，服务也很周到！")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"emotion_label", "confidence", "uncertain", "chat_response", "inference_time_ms"}
    assert isinstance(body["uncertain"], bool)
    assert body["emotion_label"] in LABELS and 0.5 <= body["confidence"] <= 1
    assert isinstance(body["chat_response"], str)
    times = body["inference_time_ms"]
    assert set(times) == {"emotion", "chat", "total"} and all(t > 0 for t in times.values())


def test_infer_emotion_only(url):
    body = infer(url, text="太失望了", mode="emotion").json()
    assert body["emotion_label"] in LABELS and isinstance(body["confidence"], float)
    assert body["chat_response"] is None and body["inference_time_ms"]["chat"] is None


def test_infer_chat_only_with_history(url):
    history = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！有什么可以帮你？"}]
    body = infer(url, text="讲个笑话", history=history, mode="chat").json()
    assert body["emotion_label"] is None and body["confidence"] is None
    assert isinstance(body["chat_response"], str) and body["inference_time_ms"]["emotion"] is None


def test_infer_typed_tag_overrides_the_default_mode(url):
    body = infer(url, text="#EMOTION# 今天真不错").json()
    assert body["emotion_label"] in LABELS and body["chat_response"] is None


BAD_REQUESTS = {
    "empty text": ({"text": ""}, 400, "empty"),
    "blank text": ({"text": " \n\t "}, 400, "empty"),
    "tag only": ({"text": "#CHAT#"}, 400, "empty"),
    "too long": ({"text": "好" * 3000}, 400, "too long"),
    "text not a string": ({"text": 42}, 400, "must be a string"),
    "text null": ({"text": None}, 400, "must be a string"),
    "text missing": ({"history": []}, 400, "required"),
    "history not a list": ({"text": "hi", "history": "你好"}, 400, "history"),
    "history item not an object": ({"text": "hi", "history": ["你好"]}, 400, "history[0]"),
    "history bad role": ({"text": "hi", "history": [{"role": "system", "content": "x"}]}, 400, "role"),
    "history content not a string": ({"text": "hi", "history": [{"role": "user", "content": 1}]}, 400, "content"),
    "bad mode": ({"text": "hi", "mode": "poem"}, 400, "mode"),
    "unknown field": ({"text": "hi", "temperature": 2}, 400, "unknown"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_infer_refuses_bad_input_with_4xx_and_an_error(url, case):
    body, status, words = BAD_REQUESTS[case]
    response = infer(url, **body)
    assert response.status_code == status
    assert words in response.json()["error"]


@pytest.mark.parametrize("content, words", [
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b'["text"]', "JSON object"),
    (b"\xff\xfe\x00", "UTF-8"),
])
def test_infer_refuses_bodies_that_are_not_a_json_object(url, content, words):
    response = httpx.post(f"{url}/api/infer", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400 and words in response.json()["error"]


def test_infer_refuses_a_body_over_the_limit(url):
    response = httpx.post(f"{url}/api/infer", content=json.dumps({"text": "x" * 70_000}))
    assert response.status_code == 413 and "too large" in response.json()["error"]


def test_infer_needs_post(url):
    response = httpx.get(f"{url}/api/infer")
    assert response.status_code == 405 and "POST" in response.json()["error"]


def test_gradio_client_sentiment_and_streamed_chat(client):
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/sentiment", "/chat", "/classify_many"}
    result = client.predict("服务很好，下次还来", api_name="/sentiment")
    assert result["label"] in LABELS and 0.5 <= result["confidence"] <= 1 and result["inference_time_ms"] > 0
    assert isinstance(result["uncertain"], bool)
    job = client.submit("你好", [{"role": "user", "content": "在吗"}, {"role": "assistant", "content": "在"}],
                        api_name="/chat")
    outputs = list(job)
    assert outputs and all(isinstance(o, str) for o in outputs)
    assert all(outputs[i + 1].startswith(outputs[i]) for i in range(len(outputs) - 1))  # the text so far
    assert job.outputs()[-1] == outputs[-1]


def test_many_texts_through_gradio_client_and_the_json_api_agree_with_one_by_one(client, url):
    texts = ["服务很好，下次还来", "", "太差了"]
    by_client = client.predict(texts, api_name="/classify_many")
    by_json = httpx.post(f"{url}/api/classify", json={"texts": texts}, timeout=60).json()
    one = client.predict(texts[0], api_name="/sentiment")
    for body in (by_client, by_json):
        assert [r["emotion_label"] is None for r in body["results"]] == [False, True, False]
        assert body["results"][0]["emotion_label"] == one["label"]
        assert body["results"][0]["confidence"] == pytest.approx(one["confidence"], abs=1e-3)
        assert "empty" in body["results"][1]["error"] and (body["labelled"], body["refused"]) == (2, 1)
    with pytest.raises(AppError, match="too many texts"):
        client.predict(["好"] * 5001, api_name="/classify_many")


def test_gradio_client_errors_carry_the_reason(client):
    with pytest.raises(AppError, match="empty"):
        client.predict("   ", api_name="/sentiment")
    with pytest.raises(AppError, match="role"):
        client.predict("你好", [{"role": "robot", "content": "x"}], api_name="/chat")


# -- busy: the test holds the model itself, so requests pile up behind it -----------------------------------

@pytest.fixture(scope="module")
def one_slot_app(tiny_engine):
    """The app on the tiny model with room for one waiting request per door."""
    with serve(tiny_engine, queue_max_size=1) as app:
        yield app


@contextlib.contextmanager
def holding_the_model(app):
    """Hold the app's model gate as a long reply and a label would (labels get in beside a reply alone)."""
    jobs = [hold_model(app.service.gate), hold_model(app.service.gate, quick=True)]
    try:
        yield
    finally:
        for job in jobs:
            job.cancel()


def test_infer_says_busy_when_too_many_requests_wait(one_slot_app):
    url = one_slot_app.local_url.rstrip("/")
    results = []
    with holding_the_model(one_slot_app):
        waiting = threading.Thread(target=lambda: results.append(infer(url, text="一", mode="emotion")))
        waiting.start()
        wait_until(lambda: httpx.get(f"{url}/healthz").json()["waiting"] == 1, what="a request to wait")

        response = infer(url, text="二", mode="emotion")

        assert response.status_code == 503 and response.json() == {"error": BUSY_MESSAGE}
        assert response.headers["retry-after"]
        assert results == []  # the waiting one is still waiting
    waiting.join(60)
    assert results[0].status_code == 200 and results[0].json()["emotion_label"] in LABELS


def test_every_door_shares_one_line_and_a_full_line_says_busy(one_slot_app):
    url = one_slot_app.local_url.rstrip("/")
    client = Client(url, verbose=False)
    with holding_the_model(one_slot_app):
        waiting = client.submit("一", api_name="/sentiment")  # Gradio starts it at once: it waits at the gate
        wait_until(lambda: one_slot_app.service.gate.waiting == 1, what="the first job to wait for the model")
        with pytest.raises(AppError, match="busy, try again"):
            client.predict("二", api_name="/sentiment")
        assert infer(url, text="三", mode="emotion").status_code == 503  # the JSON API counts the same line
    assert waiting.result(timeout=60)["label"] in LABELS


# -- cancellation, on the fake engine whose generation the test holds open ------------------------------------

def test_cancelling_a_gradio_chat_stops_the_engine():
    gate = threading.Event()
    engine = FakeEngine(gate=gate, reply_pieces=["一", "二"])
    with serve(engine) as app:
        client = Client(app.local_url, verbose=False)
        job = client.submit("数一数", [], api_name="/chat")
        wait_until(lambda: engine.active_generations == 1 and job.outputs(), what="the first piece")
        job.cancel()
        wait_until(lambda: engine.generations_cancelled == 1, what="the engine to cancel")
        assert engine.active_generations == 0
        wait_until(lambda: not app.service.gate.busy, what="the model to be free")


def test_a_client_that_hangs_up_cancels_its_generation():
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    with serve(engine) as app:
        host, port = "127.0.0.1", int(app.local_url.rstrip("/").rsplit(":", 1)[1])
        body = json.dumps({"text": "你好", "mode": "chat"}).encode()
        with socket.create_connection((host, port)) as sock:
            sock.sendall(b"POST /api/infer HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body))
            wait_until(lambda: engine.active_generations == 1, what="generation to start")
        wait_until(lambda: engine.generations_cancelled == 1, what="the hang-up to cancel it")
        assert engine.active_generations == 0
        wait_until(lambda: not app.service.gate.busy, what="the model to be free")


def test_share_without_internet_says_so_and_keeps_serving(monkeypatch, capsys):
    def no_tunnel(*args, **kwargs):
        raise RuntimeError("Could not get share link from Gradio API Server.")

    monkeypatch.setattr(gradio.networking, "setup_tunnel", no_tunnel)
    with serve(FakeEngine(), share=True) as app:
        assert app.share_url is None
        assert httpx.get(f"{app.local_url.rstrip('/')}/healthz").status_code == 200
    out = capsys.readouterr().out
    assert "share tunnel could not be opened" in out and app.local_url in out


def test_the_page_needs_nothing_from_the_internet(url):
    page = httpx.get(url)
    assert page.status_code == 200 and "<!doctype html>" in page.text.lower()
    assert not re.search(r"""(src|href)=["']?https?://""", page.text)  # no CDN scripts or styles
    config = httpx.get(f"{url}/config").json()
    assert config["title"] == demo.TITLE
    assert config["analytics_enabled"] is False
    assert not [s for s in config.get("stylesheets", []) if "://" in s]  # e.g. Google Fonts
    assert not re.search(r"""@import|url\(['"]?https?:""", httpx.get(f"{url}/theme.css").text)


@pytest.mark.slow
@pytest.mark.real_model
def test_the_real_model_served_end_to_end(real_model_dir):
    engine = pipeline.load_engine(real_model_dir)
    with serve(engine) as app:
        url = app.local_url.rstrip("/")
        assert httpx.get(f"{url}/healthz").json()["model"] == engine.model_name
        happy = infer(url, text="今天的实验终于成功了，太开心了！", mode="emotion").json()
        sad = infer(url, text="这家餐厅的服务太差了，等了一个小时才上菜，再也不来了。", mode="emotion").json()
        assert (happy["emotion_label"], sad["emotion_label"]) == ("正面", "负面")
        both = infer(url, text="你好，请用一句话介绍一下你自己。").json()
        assert both["emotion_label"] in LABELS and both["chat_response"].strip()
        client = Client(app.local_url, verbose=False)
        assert client.predict("服务很周到，菜也好吃。", api_name="/sentiment")["label"] == "正面"
        assert client.predict("用一句话介绍杭州。", [], api_name="/chat").strip()
