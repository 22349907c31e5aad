"""Serving: the page and the JSON API on one port, the routes closed to strangers, the settings and launch.

demo.py builds the page and calls launch(); nothing here imports demo.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from pipeline import Settings, UserInputError
from pipeline.config import EnvSettings, setting

from .auth import ApiKeyGuard
from .client_key import TrustedProxies
from .gate import MAX_LABEL_PASS_MS, MAX_LABEL_PASSES, MAX_PER_CLIENT
from .metrics import DoorMiddleware, Metrics
from .service import ModelService
from .http_api import api_router, error
from .openai_api import openai_router
from .ui import assets


@dataclass(frozen=True)
class ServerSettings(EnvSettings):
    """How the app is served; each field has an env var and a CLI flag (the flag wins)."""

    host: str = setting("127.0.0.1", "GRADIO_SERVER_NAME", "Address to listen on; 0.0.0.0 for all interfaces.",
                        flag="--host")
    port: int = setting(7860, "GRADIO_SERVER_PORT", "Port to listen on.", flag="--port")
    share: bool = setting(
        False, "GRADIO_SHARE",
        "Also open a temporary public gradio.live link (needs internet; the app keeps serving locally without).",
        flag="--share")
    queue_max_size: int = setting(
        16, "QUEUE_MAX_SIZE",
        "Most requests that may wait for the model, from the page and both APIs together; "
        "more are told \"busy, try again\".", flag="--queue-max-size")
    api_max_body_bytes: int = setting(
        1 << 20, "API_MAX_BODY_BYTES", "Largest /api/infer and /v1/chat/completions body accepted, in bytes.",
        flag="--api-max-body-bytes")
    api_max_batch_body_bytes: int = setting(
        8 << 20, "API_MAX_BATCH_BODY_BYTES",
        "Largest /api/classify body accepted, in bytes (BATCH_MAX_TEXTS limits the number of texts).",
        flag="--api-max-batch-body-bytes")

    max_label_passes: int = setting(
        MAX_LABEL_PASSES, "MAX_LABEL_PASSES",
        "Labels go first, but a reply waiting to start lets at most this many labels take the model before it "
        "(0: none), then goes first.", flag="--max-label-passes")
    max_label_pass_ms: float = setting(
        MAX_LABEL_PASS_MS, "MAX_LABEL_PASS_MS",
        "Or at most this much label work, in milliseconds, whichever comes first (long reviews).",
        flag="--max-label-pass-ms")
    max_per_client: int = setting(
        MAX_PER_CLIENT, "MAX_PER_CLIENT",
        "Most requests one client (a page tab, an API caller's address) may have waiting; more are told "
        "\"busy, try again\" and nobody else loses their place.", flag="--max-per-client")
    forwarded_allow_ips: str = setting(
        "", "FORWARDED_ALLOW_IPS",
        "Proxies trusted to name the client in X-Forwarded-For (addresses or networks, comma-separated, or *); "
        "empty: none, each connection's own address is the client. Set it to the proxy's address behind one.",
        flag="--forwarded-allow-ips")

    served_model_name: str = setting(
        "", "SERVED_MODEL_NAME",
        "The model's id in the OpenAI-compatible API (/v1/models, the `model` of /v1/chat/completions), as "
        "vLLM's flag of that name. Empty: the model folder's name.", flag="--served-model-name",
        shown="the model folder's name")

    api_key: str = setting(
        "", "API_KEY",
        "When set, /v1/*, /api/* and /metrics need the header `Authorization: Bearer API_KEY` (401 without it); "
        "the page and /healthz stay open (PAGE_AUTH guards the page). Empty: no key. Never printed.",
        flag="--api-key", shown="unset")
    page_auth: str = setting(
        "", "PAGE_AUTH",
        "`USER:PASSWORD`: Gradio's own login in front of the page and its Gradio API (with API_KEY, all of a "
        "share link is guarded). Empty: the page is open. Never printed.", flag="--page-auth",
        shown="unset")

    def __repr__(self) -> str:
        # The key and the password never reach a log or a traceback through the settings' repr.
        secret = {"api_key", "page_auth"}
        fields = (f"{f.name}={'***' if f.name in secret and getattr(self, f.name) else repr(getattr(self, f.name))}"
                  for f in dataclasses.fields(self))
        return f"{type(self).__name__}({', '.join(fields)})"

    @property
    def gradio_auth(self) -> tuple[str, str] | None:
        """PAGE_AUTH as Gradio's launch(auth=...) takes it (None: no login)."""
        if not self.page_auth:
            return None
        user, _, password = self.page_auth.partition(":")
        return user, password

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UserInputError(f"port must be between 0 and 65535, got {self.port}")
        if self.max_label_passes < 0 or self.max_label_pass_ms <= 0:
            raise UserInputError("max_label_passes must be 0 or more and max_label_pass_ms more than 0")
        if self.page_auth and (":" not in self.page_auth or not all(self.page_auth.partition(":")[::2])):
            raise UserInputError("page_auth must be USER:PASSWORD, both non-empty")  # never quotes the value
        for name in ("queue_max_size", "api_max_body_bytes", "api_max_batch_body_bytes", "max_per_client"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{name} must be at least 1, got {getattr(self, name)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags: the engine's (--model-dir) and the server's; each mirrors an env var."""
    parser = argparse.ArgumentParser(description="Qwen All-in-One: the page and the JSON API on one model.")
    Settings.add_arguments(parser)
    ServerSettings.add_arguments(parser)
    return parser.parse_args(argv)


# Largest upload (the batch tab's file): 5,000 reviews of 500 characters in UTF-8 are about 7.5 MB.
MAX_FILE_SIZE = "8mb"
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/", "/file=")


class FileRouteGuard:
    """ASGI middleware: Gradio's file routes serve only Gradio's upload folder, nothing else.

    Gradio's own /file= also serves its examples cache (a folder in the working directory) and
    fetches any public http(s) URL on the caller's behalf: behind a share link that would serve
    strangers. The page needs only the batch tab's uploads and its labelled CSV, both kept in the
    upload folder; every other path answers 404 before Gradio sees it.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope.get("path", "")
            prefix = next((p for p in FILE_ROUTES if path.startswith(p)), None)
            if prefix is not None and not in_upload_folder(path[len(prefix):]):
                response = error(404, "not found: this app serves only its own uploads and results")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def in_upload_folder(path: str) -> bool:
    """Whether path (as a file route names it) is a file inside Gradio's upload folder."""
    if not path.startswith("/"):
        return False  # relative paths and URLs (http://...) are never ours
    root = os.path.realpath(get_upload_folder())
    real = os.path.realpath(path)
    return real != root and os.path.commonpath([root, real]) == root


@dataclass
class App:
    """The page, the Gradio API and the JSON API around one ModelService; launch() serves them."""

    service: ModelService
    demo: gr.Blocks
    settings: ServerSettings
    local_url: str | None = None
    share_url: str | None = None
    metrics: Metrics | None = None

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = Metrics(self.service)
            self.metrics.observe()

    def launch(self, prevent_thread_lock: bool = False, quiet: bool = False, **overrides: Any) -> "App":
        """Serve on settings.host:port (plus a share link if asked); overrides go to Blocks.launch()."""
        s = self.settings
        # The JSON routes are handed to the FastAPI app Gradio builds, so launch() (and with it
        # --share's tunnel) serves them on the same port, ahead of Gradio's own routes.
        trusted = TrustedProxies(s.forwarded_allow_ips)
        routes = list(api_router(self.service, s.api_max_body_bytes, s.api_max_batch_body_bytes, trusted).routes)
        routes += openai_router(self.service, s.served_model_name or None, s.api_max_body_bytes, trusted).routes
        routes += self.metrics.router().routes
        # uvicorn (under Gradio) rewrites each request's client from X-Forwarded-For for the proxies it trusts,
        # read from this variable when launch() builds its config: the same list as our own client keys.
        os.environ["FORWARDED_ALLOW_IPS"] = s.forwarded_allow_ips
        kwargs = dict(
            server_name=s.host, server_port=s.port, share=s.share, prevent_thread_lock=True, quiet=quiet,
            app_kwargs={"routes": routes, "middleware": self.middleware()}, auth=s.gradio_auth,
            theme=assets.theme(), css=assets.CSS, js=assets.PAGE_JS, i18n=assets.gradio_words(), show_error=False, footer_links=["api", "settings"], run_history=False, enable_monitoring=False,
            ssr_mode=False, pwa=False, mcp_server=False, max_file_size=MAX_FILE_SIZE, strict_cors=True)
        kwargs.update(overrides)
        _, self.local_url, self.share_url = self.demo.launch(**kwargs)
        if kwargs["share"] and not self.share_url:
            print(f"* No public link: the share tunnel could not be opened (no internet, or gradio.live "
                  f"unreachable). Still serving locally at {self.local_url}", flush=True)
        if not prevent_thread_lock:
            self.demo.block_thread()
        return self

    def middleware(self) -> list[Middleware]:
        """The ASGI middleware around every route: the API key (if set) first, then the file-route guard."""
        guards = [Middleware(DoorMiddleware), Middleware(FileRouteGuard)]
        if self.settings.api_key:
            guards.insert(0, Middleware(ApiKeyGuard, api_key=self.settings.api_key))
        return guards

    def close(self) -> None:
        """Stop the server."""
        self.demo.close()
