"""Fairness through the HTTP doors (issue #26): a reply starts under a label flood; who a client is (client_key)."""

from __future__ import annotations

import threading

import httpx
import pytest
from gradio_client import Client

from app.client_key import (
    TrustedProxies,
    address_key,
    client_address,
    client_key,
    session_key,
)
from tests.fakes import FakeEngine
from tests.served import serve, wait_until

FLOOD_CLIENTS = 8
FLOOD_LABELS_EACH = 250  # bounds the flood, so the test ends even if the reply starves


class SaturatingEngine(FakeEngine):
    """A fake engine whose label holds the model until another label asks for it, as under a real flood
    (a label takes a few hundred ms, far longer than an HTTP round trip), or until the flood ends."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gate_of_service = None
        self.flood_over = threading.Event()  # set when the first flood client has sent all its labels

    def classify(self, request):
        pause = threading.Event()
        for _ in range(2000):  # bounded: at most about 10 s
            if self.flood_over.is_set() or self.gate_of_service.labels_asking > 0:
                break
            pause.wait(0.005)
        return super().classify(request)


def test_a_streamed_chat_gets_its_first_token_while_eight_clients_flood_labels():
    engine = SaturatingEngine()
    with serve(engine, forwarded_allow_ips="127.0.0.1,::1") as app:  # the flood names its clients in X-Forwarded-For
        engine.gate_of_service = app.service.gate
        url = app.local_url.rstrip("/")
        client = Client(url, verbose=False)
        served, lock = [0], threading.Lock()

        def flood(n: int) -> None:
            # Each its own client, as the doors count them once they pass one (the loopback proxy is trusted).
            with httpx.Client(headers={"X-Forwarded-For": f"10.0.0.{n}"}, timeout=60) as http:
                for _ in range(FLOOD_LABELS_EACH):
                    if http.post(f"{url}/api/infer", json={"text": "还不错", "mode": "emotion"}).status_code == 200:
                        with lock:
                            served[0] += 1
            engine.flood_over.set()

        flooders = [threading.Thread(target=flood, args=(n,), daemon=True) for n in range(FLOOD_CLIENTS)]
        for thread in flooders:
            thread.start()
        wait_until(lambda: served[0] >= FLOOD_CLIENTS, what="the flood to be under way")
        chat = client.submit("你好", [], api_name="/chat")
        wait_until(lambda: chat.outputs(), timeout=120, what="the reply's first token")
        with lock:
            over_at_first_token, served_at_first_token = engine.flood_over.is_set(), served[0]
        assert not over_at_first_token  # the flood was still running when the first token came
        wait_until(lambda: served[0] > served_at_first_token or engine.flood_over.is_set(), what="another label")
        assert served[0] > served_at_first_token  # and labels kept being answered after it
        assert chat.result(timeout=60).startswith("回复")
        for thread in flooders:
            thread.join(120)


LOOPBACK = TrustedProxies("127.0.0.1,::1")
COMPOSE = TrustedProxies("172.16.0.0/12")


@pytest.mark.parametrize("peer, forwarded, trusted, expected", [
    ("203.0.113.7", None, LOOPBACK, "203.0.113.7"),  # no proxy
    ("127.0.0.1", "203.0.113.7", TrustedProxies(), "127.0.0.1"),  # by default no proxy is trusted, loopback neither
    ("203.0.113.7", "10.1.1.1", LOOPBACK, "203.0.113.7"),  # an untrusted peer cannot name another client
    ("127.0.0.1", "203.0.113.7", LOOPBACK, "203.0.113.7"),  # a proxy on this host
    ("127.0.0.1", None, LOOPBACK, "127.0.0.1"),  # a local client
    ("127.0.0.1", "6.6.6.6, 203.0.113.7", LOOPBACK, "203.0.113.7"),  # the client forged the left entry
    ("172.18.0.5", "203.0.113.7", LOOPBACK, "172.18.0.5"),  # a proxy not trusted: it is the client
    ("172.18.0.5", "6.6.6.6, 203.0.113.7", COMPOSE, "203.0.113.7"),  # the compose network's nginx, trusted
    ("172.18.0.5", "203.0.113.7, 172.18.0.9", COMPOSE, "203.0.113.7"),  # two trusted proxies in a row
    ("172.18.0.5", "172.18.0.8, 172.18.0.9", COMPOSE, "172.18.0.8"),  # every hop trusted: the first
    ("172.18.0.5", " , ", COMPOSE, "172.18.0.5"),  # an empty header
    ("127.0.0.1", ["6.6.6.6", "203.0.113.7"], LOOPBACK, "203.0.113.7"),  # two headers, read in order
    ("::1", "2001:db8::1", LOOPBACK, "2001:db8::1"),
    ("::ffff:127.0.0.1", "203.0.113.7", LOOPBACK, "203.0.113.7"),  # IPv4 written as IPv6
    ("10.0.0.1", "203.0.113.7", TrustedProxies("*"), "203.0.113.7"),
    (None, "203.0.113.7", LOOPBACK, None),  # no peer (a test client): nothing to go on
])
def test_client_address_reads_x_forwarded_for_only_from_trusted_proxies(peer, forwarded, trusted, expected):
    assert client_address(peer, forwarded, trusted) == expected


@pytest.mark.parametrize("address, key", [
    ("203.0.113.7", "ip:203.0.113.7"),
    ("203.0.113.7:5555", "ip:203.0.113.7"),
    ("2001:db8::1", "ip:2001:db8::/64"),  # one host's /64 is one client
    ("[2001:db8::2]:443", "ip:2001:db8::/64"),
    ("::ffff:10.0.0.1", "ip:10.0.0.1"),
    ("unix:/run/app.sock", "ip:unix:/run/app.sock"),
    (None, None),
])
def test_address_key(address, key):
    assert address_key(address) == key


def test_client_key_takes_the_headers_of_a_request():
    headers = httpx.Headers([("x-forwarded-for", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.7")])
    assert client_key("127.0.0.1", headers, LOOPBACK) == "ip:203.0.113.7"
    assert client_key("127.0.0.1", {"x-forwarded-for": "203.0.113.7"}, LOOPBACK) == "ip:203.0.113.7"
    assert client_key("127.0.0.1", None, LOOPBACK) == "ip:127.0.0.1"
    assert session_key("abc") == "session:abc"
