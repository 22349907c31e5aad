"""GET /metrics, parsed with prometheus_client's own parser: counters move by the right amounts after known
requests at every door, and the gauges read the service's live state."""

from __future__ import annotations

import httpx
import openai
import pytest
from gradio_client import Client
from prometheus_client.parser import text_string_to_metric_families

from app.gate import Job
from tests.fakes import FakeEngine
from tests.served import PacedModel, hold_model, serve, wait_until

MAX_NEW_TOKENS = 200


@pytest.fixture(scope="module")
def engine(tiny_engine_with):
    return tiny_engine_with(chat_max_new_tokens=MAX_NEW_TOKENS)


@pytest.fixture(scope="module")
def served_settings() -> dict:
    return {"queue_max_size": 1}


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics: (name, labels) -> value."""
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_of(samples, door: str, outcome: str) -> float:
    return value(samples, "qwen_requests_total", door=door, outcome=outcome)


def moved(before, after, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_an_openai_completion_counts_its_request_times_and_tokens(url, engine):
    before = scrape(url)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with PacedModel(engine, per_token_s=0):  # no end-of-turn token: exactly max_tokens
        reply = client.chat.completions.create(model=engine.model_name, messages=[{"role": "user", "content": "你好"}],
                                               max_tokens=6)
    after = wait_until(lambda: (s := scrape(url)) and requests_of(s, "openai", "ok") > requests_of(before, "openai", "ok")
                       and s, what="the request to be counted")
    assert reply.usage.completion_tokens == 6
    assert moved(before, after, "qwen_requests_total", door="openai", outcome="ok") == 1
    assert moved(before, after, "qwen_generated_tokens_total", door="openai") == 6
    for histogram in ("qwen_time_to_first_token_seconds", "qwen_reply_seconds", "qwen_decode_tokens_per_second"):
        assert moved(before, after, f"{histogram}_count", door="openai") == 1, histogram
        assert moved(before, after, f"{histogram}_sum", door="openai") > 0, histogram
    assert moved(before, after, "qwen_label_seconds_count", door="openai") == 0  # a completion asks for no label


def test_api_infer_counts_a_label_and_a_reply(url):
    before = scrape(url)
    response = httpx.post(f"{url}/api/infer", json={"text": "今天很开心"}, timeout=60)
    assert response.status_code == 200
    after = scrape(url)
    assert moved(before, after, "qwen_requests_total", door="api_infer", outcome="ok") == 1
    assert moved(before, after, "qwen_label_seconds_count", door="api_infer") == 1
    assert moved(before, after, "qwen_label_seconds_sum", door="api_infer") == pytest.approx(
        response.json()["inference_time_ms"]["emotion"] / 1000, abs=1e-3)
    assert moved(before, after, "qwen_reply_seconds_count", door="api_infer") == 1


def test_a_batch_counts_its_rows(url):
    before = scrape(url)
    texts = ["很好", "很差", "一般", ""]
    response = httpx.post(f"{url}/api/classify", json={"texts": texts}, timeout=60)
    assert response.status_code == 200 and response.json()["refused"] == 1
    after = scrape(url)
    assert moved(before, after, "qwen_requests_total", door="api_classify", outcome="ok") == 1
    assert moved(before, after, "qwen_batch_rows_sum") == 3  # the empty text is refused before any forward
    assert moved(before, after, "qwen_batch_rows_count") >= 1


def test_the_named_gradio_api_is_the_gradio_door(url):
    before = scrape(url)
    Client(url, verbose=False).predict("你好", None, api_name="/chat")
    after = wait_until(lambda: (s := scrape(url)) and requests_of(s, "gradio", "ok") > requests_of(before, "gradio", "ok")
                       and s, what="the gradio request to be counted")
    assert moved(before, after, "qwen_requests_total", door="gradio", outcome="ok") == 1


def test_refusals_are_counted_by_outcome(url, app):
    before = scrape(url)
    assert httpx.post(f"{url}/api/infer", json={"text": "   "}, timeout=30).status_code == 400
    assert httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": " "}]},
                      timeout=30).status_code == 400
    holder, waiter = hold_model(app.service.gate), Job()
    app.service.gate.admit(waiter)  # the line (queue_max_size=1) is full
    try:
        assert scrape(url)[("qwen_queue_depth", frozenset())] == 1
        assert httpx.post(f"{url}/api/infer", json={"text": "你好"}, timeout=30).status_code == 503
    finally:
        waiter.cancel()
        holder.cancel()
    after = scrape(url)
    assert moved(before, after, "qwen_requests_total", door="api_infer", outcome="invalid") == 1
    assert moved(before, after, "qwen_requests_total", door="openai", outcome="invalid") == 1
    assert moved(before, after, "qwen_requests_total", door="api_infer", outcome="busy") == 1
    assert value(after, "qwen_queue_depth") == 0


def test_a_client_gone_is_counted_cancelled(url, engine):
    before = scrape(url)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with PacedModel(engine, per_token_s=0.01) as paced:
        stream = client.chat.completions.create(model=engine.model_name, messages=[{"role": "user", "content": "讲故事"}],
                                                stream=True)
        next(iter(stream))
        wait_until(lambda: paced.forwards >= 3 and value(scrape(url), "qwen_active_generations") == 1,
                   what="the reply to be under way")
        stream.close()
        after = wait_until(lambda: (s := scrape(url)) and requests_of(s, "openai", "cancelled")
                           > requests_of(before, "openai", "cancelled") and s, what="the cancel to be counted")
    assert moved(before, after, "qwen_requests_total", door="openai", outcome="cancelled") == 1
    assert moved(before, after, "qwen_reply_seconds_count", door="openai") == 0  # a cut reply is not a whole reply
    wait_until(lambda: value(scrape(url), "qwen_active_generations") == 0, what="the generation to end")


def test_kv_store_gauges_read_the_engine(url, engine):
    httpx.post(f"{url}/api/infer", json={"text": "再说一句", "mode": "chat"}, timeout=60)
    samples = scrape(url)
    store = engine.conversations
    assert value(samples, "qwen_kv_store_bytes") == store.bytes > 0
    assert value(samples, "qwen_kv_store_budget_bytes") == store.budget_bytes
    assert value(samples, "qwen_kv_store_entries") == len(store)
    assert value(samples, "qwen_kv_store_hits_total") == store.hits
    assert value(samples, "qwen_kv_store_hit_ratio") == pytest.approx(store.hits / (store.hits + store.misses))
    assert value(samples, "qwen_model_loaded") == 1


def test_each_app_has_its_own_registry():
    with serve(FakeEngine()) as app:
        url = app.local_url.rstrip("/")
        assert not any(name == "qwen_requests_total" for name, _ in scrape(url))
        httpx.post(f"{url}/api/infer", json={"text": "你好"}, timeout=30)
        assert requests_of(scrape(url), "api_infer", "ok") == 1
        assert "qwen_kv_store_bytes" not in {name for name, _ in scrape(url)}  # the fake keeps no KV store
