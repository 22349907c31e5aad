"""Load (slow): 8 clients x 25 mixed requests at once against the served app; nothing lost or crossed.

Each client sends its requests one after another, alternating the JSON API and gradio_client, over
emotion / chat / both, each text carrying its request's tag. Every answer must be its own request's:
- a reply starts with the tag of the message it answers (the engine is wrapped to stream the tag
  first, then the real model's reply), so a reply that reached another client does not match;
- a label and confidence must equal the ones computed on the same engine before the run, and the
  sentiment-only texts are chosen so that no two of them expect the same (label, confidence).
Each request must be answered or refused as busy (HTTP 503 / the Gradio API's "busy, try again"); the model
must have run each answered request exactly once and a refused one never. Figures are printed (-s).

    bash scripts/test.sh --slow
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.served import RecordingEngine, serve, wait_until
from app.gate import BUSY_MESSAGE

pytestmark = pytest.mark.slow

CLIENTS = 8
REQUESTS_EACH = 25
TIMEOUT_S = 120  # for any one request
CHARS = "这家店的菜很好吃物流太慢了失望今天天气不错讲个笑话吧电影一般服务周到下次还来abcxyz0123456789"
TEXTS = ["这家店的菜很好吃", "物流太慢了，很失望", "今天天气不错", "讲个笑话吧", "这部电影一般般", "服务周到，下次还来"]


@dataclass
class Request:
    tag: str
    door: str  # "json" or "gradio"
    mode: str  # "emotion", "chat" or "both" (gradio: emotion or chat)
    text: str = ""
    expected: Any = None
    outcome: str | None = None  # "answered", "busy", "wrong", "error"
    got: Any = None
    answers: int = 0
    ms: float | None = None


@dataclass
class Figures:
    sent: int = 0
    answered: int = 0
    busy: int = 0
    wrong: int = 0
    errors: int = 0
    lost: int = 0
    answered_twice: int = 0
    details: list = field(default_factory=list)


class TaggedReply:
    """A chat stream that sends its message's tag first, then the real reply; `text` includes the tag."""

    def __init__(self, stream, tag: str):
        self._stream, self._tag, self._tag_sent = stream, tag, False

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if not self._tag_sent:
            self._tag_sent = True
            return self._tag
        return next(self._stream)

    @property
    def text(self) -> str:
        return self._tag + self._stream.text

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stream.close()


class TaggingEngine(RecordingEngine):
    """The real engine, recorded (tests/served.py), whose replies start with the message's tag."""

    def chat(self, request, max_new_tokens=None):
        return TaggedReply(super().chat(request, max_new_tokens), tag_of(request.text))


def tag_of(text: str) -> str:
    return text[text.rindex("〔"):]


@pytest.fixture(scope="module")
def engine(tiny_engine):
    return TaggingEngine(tiny_engine)


@pytest.fixture(scope="module")
def planned(engine) -> list[list[Request]]:
    return plan(engine)


def expected_answer(engine, mode: str, text: str):
    """What the served app must answer: the label and confidence computed on the engine, the reply's start."""
    label = conf = None
    if mode in ("emotion", "both"):
        sentiment = engine.classify(text)
        label, conf = sentiment.label, round(sentiment.confidence, 4)
    return label, conf, tag_of(text) if mode in ("chat", "both") else None


def matches(got, expected) -> bool:
    label, conf, reply = got
    if (label, conf) != expected[:2] or (reply is None) != (expected[2] is None):
        return False
    return reply is None or reply.startswith(expected[2])


def plan(engine) -> list[list[Request]]:
    """Each client's requests, each with a text whose expected answer no other request shares."""
    seen: set = set()
    clients = []
    for c in range(CLIENTS):
        requests = []
        for i in range(REQUESTS_EACH):
            door = ("json", "gradio")[(c + i) % 2]
            mode = ("emotion", "chat", "both")[(c + i) % 3] if door == "json" else ("emotion", "chat", "chat")[i % 3]
            request = Request(f"c{c}-r{i}", door, mode)
            rng = random.Random(request.tag)
            for _ in range(300):  # the tiny model's confidences are few (0.50..0.51): find an unused one
                words = "".join(rng.choice(CHARS) for _ in range(rng.randint(2, 30)))
                text = f"{TEXTS[(c * 7 + i) % len(TEXTS)]}{words} 〔{request.tag}〕"
                answer = expected_answer(engine, mode, text)
                if answer not in seen:
                    break
            else:
                raise AssertionError(f"no text with a unique answer for {request.tag}")
            seen.add(answer)
            request.text, request.expected = text, answer
            requests.append(request)
        clients.append(requests)
    return clients


def send(request: Request, http: httpx.Client, gradio: Client, url: str) -> None:
    started = time.monotonic()
    try:
        if request.door == "json":
            response = http.post(f"{url}/api/infer", json={"text": request.text, "mode": request.mode})
            if response.status_code == 503 and response.json() == {"error": BUSY_MESSAGE}:
                request.outcome = "busy"
                return
            if response.status_code != 200:
                request.outcome, request.got = "error", f"{response.status_code} {response.text[:200]}"
                return
            body = response.json()
            request.got = (body["emotion_label"], body["confidence"], body["chat_response"])
        elif request.mode == "emotion":
            result = gradio.submit(request.text, api_name="/sentiment").result(timeout=TIMEOUT_S)
            request.got = (result["label"], result["confidence"], None)
        else:
            request.got = (None, None, gradio.submit(request.text, [], api_name="/chat").result(timeout=TIMEOUT_S))
        request.answers += 1
        request.outcome = "answered" if matches(request.got, request.expected) else "wrong"
    except AppError as exc:  # the gate's "busy" reaches a Gradio client as the page's busy message
        request.outcome, request.got = ("busy", None) if BUSY_MESSAGE in str(exc) else ("error", repr(exc))
    except Exception as exc:  # noqa: BLE001 - counted and shown
        request.outcome, request.got = "error", repr(exc)
    finally:
        request.ms = (time.monotonic() - started) * 1000


def run_load(app, clients: list[list[Request]]) -> None:
    url = app.local_url.rstrip("/")
    gradio_clients = [Client(app.local_url, verbose=False) for _ in clients]
    start = threading.Barrier(len(clients))

    def client(requests: list[Request], gradio: Client) -> None:
        with httpx.Client(timeout=TIMEOUT_S) as http:
            start.wait(timeout=60)
            for request in requests:
                send(request, http, gradio, url)

    threads = [threading.Thread(target=client, args=(r, g), daemon=True) for r, g in zip(clients, gradio_clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + TIMEOUT_S * REQUESTS_EACH
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "clients still running after the time limit"


def figures(clients: list[list[Request]]) -> Figures:
    f = Figures()
    for request in (r for requests in clients for r in requests):
        f.sent += 1
        f.answered += request.outcome == "answered"
        f.busy += request.outcome == "busy"
        f.wrong += request.outcome == "wrong"
        f.errors += request.outcome == "error"
        f.lost += request.outcome is None
        f.answered_twice += request.answers > 1
        if request.outcome in ("wrong", "error", None):
            f.details.append((request.tag, request.door, request.mode, request.outcome, request.got, request.expected))
    return f


@pytest.mark.parametrize("queue_max_size, may_refuse", [(16, False), (2, True)],
                         ids=["default queue (16): 8 clients never fill it", "queue of 2 (busy refusals)"])
def test_concurrent_clients_get_their_own_answers_or_busy(engine, planned, queue_max_size, may_refuse):
    clients = [[dataclasses.replace(r) for r in requests] for requests in planned]
    with serve(engine, queue_max_size=queue_max_size) as app:
        engine.forget()
        started = time.monotonic()
        run_load(app, clients)
        seconds = time.monotonic() - started
        f = figures(clients)
        times = sorted(r.ms for requests in clients for r in requests if r.outcome == "answered")
        print(f"\n[load] queue_max_size={queue_max_size}: sent {f.sent}, answered {f.answered}, busy {f.busy}, "
              f"lost {f.lost}, wrong {f.wrong}, errors {f.errors}, answered twice {f.answered_twice}; "
              f"{seconds:.1f} s, answered p50 {times[len(times) // 2]:.0f} ms, max {times[-1]:.0f} ms")
        assert f.sent == CLIENTS * REQUESTS_EACH
        assert (f.errors, f.wrong, f.lost, f.answered_twice) == (0, 0, 0, 0), f.details[:10]
        assert f.answered + f.busy == f.sent and f.answered > 0
        assert f.busy == 0 or may_refuse

        # The model ran each answered request exactly once, and never a refused one.
        ran_classify = Counter(text for text, _ in engine.classified)
        ran_chat = Counter(engine.chatted)
        for request in (r for requests in clients for r in requests):
            runs = request.outcome == "answered"
            assert ran_classify[request.text] == (runs and request.mode in ("emotion", "both")), request.tag
            assert ran_chat[request.text] == (runs and request.mode in ("chat", "both")), request.tag

        # Healthy afterwards: nothing running or waiting, and a normal request is answered.
        url = app.local_url.rstrip("/")
        wait_until(lambda: (engine.active_generations == 0 and not app.service.gate.busy
                            and app.service.gate.waiting == 0), what="an idle app")
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        after = httpx.post(f"{url}/api/infer", json={"text": "你好 〔after〕"}, timeout=TIMEOUT_S)
        assert after.status_code == 200 and after.json()["chat_response"].startswith("〔after〕")
