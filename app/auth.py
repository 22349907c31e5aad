"""API_KEY: when set, the machine doors (/v1/*, /api/*, /metrics) need `Authorization: Bearer KEY`.

The page and Gradio's own routes stay open (the page needs them): PAGE_AUTH puts Gradio's login in front
of those. /healthz stays open for probes; it tells no more than whether the model is loaded and busy.
"""

from __future__ import annotations

import hmac

from .http_api import error
from .openai_api import openai_error

PROTECTED_PREFIXES = ("/v1/", "/api/")
PROTECTED_PATHS = ("/v1", "/api", "/metrics")


def is_protected(path: str) -> bool:
    """Whether a request path is one of the doors API_KEY guards."""
    return path in PROTECTED_PATHS or path.startswith(PROTECTED_PREFIXES) or path.startswith("/metrics/")


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The token of an `Authorization: Bearer TOKEN` header (raw ASGI headers), or None."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


class ApiKeyGuard:
    """ASGI middleware: a protected path without the right bearer token gets 401 before any route sees it."""

    def __init__(self, app, api_key: str):
        self.app = app
        self._key = api_key.encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and is_protected(scope.get("path", "")):
            token = bearer_token(scope.get("headers", []))
            # Constant-time: the comparison takes as long whatever prefix of the key a guess gets right.
            if token is None or not hmac.compare_digest(token, self._key):
                response = unauthorized(scope["path"], token is not None)
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def unauthorized(path: str, wrong: bool):
    """401 in the shape of the door asked: OpenAI's for /v1, the JSON API's otherwise."""
    message = ("the API key is wrong" if wrong else
               "this server needs an API key: send the header Authorization: Bearer YOUR_KEY")
    headers = {"WWW-Authenticate": "Bearer"}
    if path == "/v1" or path.startswith("/v1/"):
        return openai_error(401, message, code="invalid_api_key", headers=headers)
    return error(401, message, headers)
