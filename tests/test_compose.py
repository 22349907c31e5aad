"""docker-compose.yml and docker-compose.scale.yml as Docker Compose itself reads them (`config`: no daemon).

Compose v2 (`docker compose` or a v2 `docker-compose`) prints JSON with `config --format json`; Debian
bookworm's docker-compose is v1 (1.29.2), which prints YAML. Both are reduced to the same plain view here.
Skipped when neither is installed (scripts/test.sh installs Debian's docker-compose as root).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.server import ServerSettings
from pipeline import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SCALE = ROOT / "docker-compose.scale.yml"
# Env vars the app reads that compose does not pass: the image fixes them (Dockerfile ENV), and the port
# mapping and the baked-in weights depend on their values there.
SET_BY_THE_IMAGE = {"MODEL_DIR", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"}
# Passed to the single app, not to the replicas: a share link would reach one replica, past nginx.
NOT_FOR_REPLICAS = {"GRADIO_SHARE"}


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def compose() -> tuple[list[str], bool]:
    """The compose command and whether it is v2 (JSON output)."""
    docker, standalone = shutil.which("docker"), shutil.which("docker-compose")
    if docker and _run([docker, "compose", "version", "--short"]).returncode == 0:
        return [docker, "compose"], True
    if standalone:
        version = _run([standalone, "version", "--short"]).stdout.strip()
        return [standalone], not version.startswith("1.")
    pytest.skip("no Docker Compose CLI (`docker compose` or `docker-compose`): "
                "bash scripts/test.sh installs Debian's docker-compose when run as root")


@pytest.fixture
def config(compose, tmp_path):
    """config(file, **env) -> the file's services as compose resolves them, with only `env` set."""
    cmd, v2 = compose

    def resolve(file: Path, **env: str) -> dict[str, Any]:
        env_file = tmp_path / "compose.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        # Nothing from this process's environment or a .env file next to the compose file gets in.
        args = [*cmd, "--env-file", str(env_file), "-f", str(file), "config"] + (["--format", "json"] if v2 else [])
        done = _run(args, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)}, cwd=tmp_path)
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stderr}"
        parsed = json.loads(done.stdout) if v2 else yaml.safe_load(done.stdout)
        return {name: _view(service) for name, service in parsed["services"].items()}

    return resolve


def _seconds(value: str | int) -> float:
    """A compose duration ("30s", "3m", "3m0s", "1h2m3s" or plain seconds) in seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    return sum(float(n) * unit[u] for n, u in parts)


def _bytes(value: str | int) -> int:
    """A compose byte size ("4g", "512m" or plain bytes) in bytes."""
    match = re.fullmatch(r"(\d+)\s*([bkmg]?)b?", str(value).lower())
    assert match, f"not a size: {value!r}"
    return int(match[1]) * 1024 ** "bkmg".index(match[2] or "b")


def _volume(volume: str | dict) -> tuple[str, str, bool]:
    if isinstance(volume, dict):  # v2's long syntax
        return volume["source"], volume["target"], bool(volume.get("read_only"))
    source, target, *mode = volume.split(":")
    return source, target, "ro" in mode


def _view(service: dict[str, Any]) -> dict[str, Any]:
    """What these tests look at in one service, the same whichever compose printed it."""
    health = service.get("healthcheck")
    limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
    depends = service.get("depends_on") or {}
    return {
        "image": service.get("image"),
        "build": service.get("build") and {"context": service["build"]["context"],
                                           "args": service["build"].get("args", {})},
        "ports": sorted((str(p["published"]), int(p["target"])) for p in service.get("ports", [])),
        "expose": sorted(str(x) for x in service.get("expose", [])),
        "environment": {k: "" if v is None else str(v) for k, v in (service.get("environment") or {}).items()},
        "healthcheck": health and {"test": health["test"], "retries": health["retries"],
                                   **{k: _seconds(health[k]) for k in ("interval", "timeout", "start_period")}},
        "memory": _bytes(limits["memory"]) if "memory" in limits else None,
        "init": service.get("init"),
        "restart": service.get("restart"),
        "volumes": [_volume(v) for v in service.get("volumes", [])],
        "depends_on": {name: (d or {}).get("condition") for name, d in
                       (depends.items() if isinstance(depends, dict) else ((n, None) for n in depends))},
    }


def _readme_env_vars() -> set[str]:
    """The env var column of the README's settings tables."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = set()
    for table in re.findall(r"^\| setting \|.*?\n(?:\|.*\n)+", readme, re.M):
        head = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
        col = head.index("env var")
        for row in table.splitlines()[2:]:
            found.add(row.strip("|").split("|")[col].strip().strip("`"))
    return found


def test_compose_file_as_compose_reads_it(config):
    services = config(COMPOSE)
    assert set(services) == {"app"}
    app = services["app"]
    assert app["image"] == "qwen-all-in-one:latest"
    assert app["build"] == {"context": str(ROOT), "args": {"MODEL_ID": "Qwen/Qwen1.5-0.5B-Chat",
                                                          "MODEL_NAME": "Qwen1.5-0.5B-Chat", "MODEL_REVISION": ""}}
    assert app["ports"] == [("7860", 7860)]
    assert app["memory"] == 4 * 1024 ** 3
    assert app["healthcheck"]["test"][:2] == ["CMD", "python"]
    assert "http://127.0.0.1:7860/healthz" in app["healthcheck"]["test"][-1]
    assert {k: app["healthcheck"][k] for k in ("interval", "timeout", "retries", "start_period")} == {
        "interval": 30, "timeout": 5, "retries": 3, "start_period": 180}
    assert app["init"] is True and app["restart"] == "unless-stopped"
    # Unset in the environment: every setting empty, which the app reads as its default.
    assert set(app["environment"].values()) == {""}


def test_every_setting_the_app_reads_is_passed_through(config):
    in_code = {row.env for cls in (Settings, ServerSettings) for row in cls.describe()}
    assert _readme_env_vars() == in_code
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in SET_BY_THE_IMAGE:
        assert re.search(rf"^\s+{name}=\S", dockerfile, re.M), f"{name} is not set by the Dockerfile's ENV"
    expected = in_code - SET_BY_THE_IMAGE
    # Each variable reaches the container under its own name (a typo in ${...} would show here).
    values = {name: f"v-{name.lower()}" for name in expected}
    app = config(COMPOSE, PORT="8081", MODEL_NAME="m", MODEL_ID="org/m", **values)["app"]
    assert app["environment"] == values
    assert app["ports"] == [("8081", 7860)]
    assert app["build"]["args"] == {"MODEL_ID": "org/m", "MODEL_NAME": "m", "MODEL_REVISION": ""}


def test_scale_file_is_the_app_behind_nginx(config):
    single = config(COMPOSE)["app"]
    services = config(SCALE)
    assert set(services) == {"app", "lb"}
    app, lb = services["app"], services["lb"]
    # The replicas publish nothing (N containers cannot share one host port): nginx does.
    assert app["ports"] == [] and app["expose"] == ["7860"]
    assert {**app, "ports": single["ports"], "expose": single["expose"], "environment": {}} == {
        **single, "environment": {}}
    assert set(app["environment"]) == set(single["environment"]) - NOT_FOR_REPLICAS
    assert lb["image"].startswith("nginx:")
    assert lb["ports"] == [("7860", 80)]
    assert lb["volumes"] == [(str(ROOT / "deploy" / "nginx.conf"), "/etc/nginx/nginx.conf", True)]
    assert lb["depends_on"] == {"app": "service_healthy"}
    assert lb["restart"] == "unless-stopped"
    # nginx.conf listens where compose publishes and sends to where the replicas listen.
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert re.search(r"^\s+listen 80;", conf, re.M)
    assert re.search(r"^\s+server app:7860\b", conf, re.M)
    values = {name: "x" for name in app["environment"]}
    scaled = config(SCALE, PORT="8081", **values)
    assert scaled["lb"]["ports"] == [("8081", 80)] and scaled["app"]["environment"] == values
