"""deploy/nginx.conf, the load balancer of docker-compose.scale.yml: what the app needs from it, and that nginx
accepts it. tests/scale_check.py (tests/test_scale.py, scripts/scale-check.sh) runs it in front of two replicas."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest

from app.server import ServerSettings
from tests.scale_check import NGINX_CONF, Nginx, local_nginx_conf, nginx_binary

CONF = NGINX_CONF.read_text()


def _directives(block: str) -> list[str]:
    """The block's directives, one string each, comments and spacing dropped."""
    text = re.sub(r"#[^\n]*", "", block)
    return [" ".join(d.split()) for d in re.split(r"[;{}]", text) if d.strip()]


def _location(path: str) -> str:
    match = re.search(rf"^\s+location {re.escape(path)} \{{\n(.*?)^\s+\}}", CONF, re.M | re.S)
    assert match, f"no location {path}"
    return match[1]


def test_local_config_changes_only_the_upstream_addresses_and_the_port():
    local = local_nginx_conf(["127.0.0.1:9001", "127.0.0.1:9002"], 8123)
    changed = [line for line in difflib.unified_diff(CONF.splitlines(), local.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert sorted(changed) == sorted([
        "-        server app:7860 max_fails=3 fail_timeout=10s;",
        "+        server 127.0.0.1:9001 max_fails=3 fail_timeout=10s;",
        "+        server 127.0.0.1:9002 max_fails=3 fail_timeout=10s;",
        "-        listen 80;",
        "+        listen 127.0.0.1:8123;"])


def test_streaming_passes_through_unbuffered():
    server_block = _directives(CONF[CONF.index("    server {"):])
    for directive in ("proxy_buffering off", "proxy_http_version 1.1", "proxy_set_header Upgrade $http_upgrade",
                      "proxy_set_header Connection $connection_upgrade", "proxy_set_header Host $http_host",
                      "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for",
                      "proxy_set_header X-Forwarded-Proto $scheme", "proxy_set_header X-Forwarded-Host $http_host"):
        assert directive in server_block, directive
    timeout = next(d for d in server_block if d.startswith("proxy_read_timeout "))
    assert timeout == "proxy_read_timeout 30m"  # longer than Gradio's heartbeat and a full line of replies


def test_affinity_is_by_cookie_and_consistent():
    upstream = _directives(re.search(r"upstream app \{(.*?)\}", CONF, re.S)[1])
    assert upstream[0] == "hash $route_key consistent"
    assert "zone app 64k" in upstream
    assert "map $cookie_qwen_route $route_key" in _directives(CONF)
    assert "add_header Set-Cookie $route_cookie always" in _directives(CONF)


def test_idle_upstream_connections_close_before_the_replica_closes_them():
    import uvicorn

    upstream = _directives(re.search(r"upstream app \{(.*?)\}", CONF, re.S)[1])
    idle = next(d.split()[1] for d in upstream if d.startswith("keepalive_timeout "))
    assert idle.endswith("s") and int(idle[:-1]) < uvicorn.Config(app=None).timeout_keep_alive


def test_api_body_limit_is_the_apps():
    limit = ServerSettings().api_max_body_bytes
    api = _directives(_location("= /api/infer"))
    size = next(d.split()[1] for d in api if d.startswith("client_max_body_size "))
    assert int(size[:-1]) * {"k": 1024, "m": 1024 ** 2}[size[-1]] == limit
    # nginx answers a larger body as the app does (app/http_api.py), in the API's error shape.
    too_large = _location("@too_large")
    assert f"""return 413 '{{"error":"the body is too large; the limit is {limit} bytes"}}';""" in too_large
    assert "proxy_next_upstream error timeout non_idempotent" in api  # /api/infer changes nothing


def test_nginx_accepts_the_config(tmp_path: Path):
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx not installed: bash scripts/scale-check.sh installs Debian's nginx as root")
    if os.geteuid() != 0:
        pytest.skip("nginx -t needs root here (Debian's nginx keeps its temp folders under /var/lib/nginx)")
    done = Nginx(binary, tmp_path, "test", ["127.0.0.1:9001", "127.0.0.1:9002"]).test()
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_nginx_conf_names_only_what_compose_provides():
    # The production file resolves `app` (the compose service) and listens on 80 (what compose publishes).
    assert re.findall(r"^\s+server (?!\{)(\S+)", CONF, re.M) == ["app:7860"]
    assert re.findall(r"^\s+listen (\S+);", CONF, re.M) == ["80"]
    assert not re.search(r"^\s*(pid|daemon|user)\s", CONF, re.M)  # the image's and scale-check's own
