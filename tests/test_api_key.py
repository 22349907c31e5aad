"""API_KEY guards /v1/*, /api/* and /metrics (Bearer, constant-time); the page stays open; PAGE_AUTH guards the page."""

from __future__ import annotations

import httpx
import openai
import pytest
from gradio_client import Client

from app.auth import bearer_token, is_protected
from app.server import ServerSettings
from pipeline import UserInputError
from tests.fakes import FakeEngine
from tests.served import serve

KEY = "s3cret-key"

# Every protected door, with a request it answers 200 with the right key.
ROUTES = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/fake-model", None),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "你好"}]}),
    ("POST", "/api/infer", {"text": "你好"}),
    ("POST", "/api/classify", {"texts": ["很好", "很差"]}),
    ("GET", "/metrics", None),
]


@pytest.fixture(scope="module")
def url():
    with serve(FakeEngine(), api_key=KEY) as app:
        yield app.local_url.rstrip("/")


def call(url: str, method: str, path: str, body, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize("method, path, body", ROUTES)
def test_refused_without_a_key(url, method, path, body):
    response = call(url, method, path, body)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    if path.startswith("/v1"):
        assert error["code"] == "invalid_api_key" and error["type"] == "authentication_error"
    else:
        assert "Authorization: Bearer" in error


@pytest.mark.parametrize("method, path, body", ROUTES)
@pytest.mark.parametrize("header", [f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", "Bearer", f"Basic {KEY}", KEY])
def test_refused_with_a_wrong_key(url, method, path, body, header):
    assert call(url, method, path, body, {"Authorization": header}).status_code == 401


@pytest.mark.parametrize("method, path, body", ROUTES)
def test_accepted_with_the_right_key(url, method, path, body):
    response = call(url, method, path, body, {"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200, response.text


def test_the_openai_client_sends_its_key(url):
    good = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    assert good.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "你好"}]).choices
    bad = openai.OpenAI(base_url=f"{url}/v1", api_key="guess", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_the_page_its_gradio_api_and_healthz_stay_open(url):
    assert httpx.get(f"{url}/", timeout=30).status_code == 200
    assert httpx.get(f"{url}/config", timeout=30).status_code == 200
    assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
    result = Client(url, verbose=False).predict("你好", None, api_name="/chat")
    assert "你好" in result


def test_page_auth_puts_gradio_login_in_front_of_the_page():
    with serve(FakeEngine(), api_key=KEY, page_auth="admin:pw") as app:
        url = app.local_url.rstrip("/")
        assert httpx.get(f"{url}/config", timeout=30).status_code == 401
        with httpx.Client(base_url=url, timeout=30) as browser:
            assert browser.post("/login", data={"username": "admin", "password": "nope"}).status_code == 400
            assert browser.post("/login", data={"username": "admin", "password": "pw"}).status_code == 200
            assert browser.get("/config").status_code == 200
            # Gradio's login does not open the machine doors: they still need the key.
            assert browser.get("/v1/models").status_code == 401


def test_without_a_key_the_doors_are_open():
    with serve(FakeEngine()) as app:
        assert httpx.get(f"{app.local_url.rstrip('/')}/v1/models", timeout=30).status_code == 200


def test_protected_paths():
    assert all(is_protected(p) for p in ("/v1", "/v1/models", "/api/infer", "/api", "/metrics", "/metrics/"))
    assert not any(is_protected(p) for p in ("/", "/config", "/healthz", "/gradio_api/info", "/apix", "/v10"))


def test_bearer_token_parsing():
    assert bearer_token([(b"authorization", b"Bearer abc")]) == b"abc"
    assert bearer_token([(b"Authorization", b"bearer  abc ")]) == b"abc"
    assert bearer_token([(b"authorization", b"Basic abc")]) is None and bearer_token([]) is None


def test_settings_hide_secrets_and_check_page_auth():
    settings = ServerSettings(api_key=KEY, page_auth="admin:pw")
    assert KEY not in repr(settings) and "pw" not in repr(settings).replace("api_key", "")
    assert settings.gradio_auth == ("admin", "pw")
    assert ServerSettings.from_env({"API_KEY": KEY}).api_key == KEY
    with pytest.raises(UserInputError, match="USER:PASSWORD"):
        ServerSettings(page_auth="admin")
