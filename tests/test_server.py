"""Serving: settings from env vars and flags (engine and server in one parser), and main()'s exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

import demo
from app import server
from pipeline import Settings, UserInputError


def test_settings_come_from_env_and_flags_win():
    env = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "9000", "GRADIO_SHARE": "true",
           "QUEUE_MAX_SIZE": "5", "MODEL_DIR": "/models/a"}
    settings = server.ServerSettings.from_env(env)
    assert (settings.host, settings.port, settings.share, settings.queue_max_size) == ("0.0.0.0", 9000, True, 5)
    args = server.parse_args(["--port", "9001", "--no-share", "--model-dir", "/models/b"])
    settings = server.ServerSettings.from_args(args, env)
    assert (settings.port, settings.share, settings.host) == (9001, False, "0.0.0.0")
    assert Settings.from_args(args, env).model_dir == Path("/models/b")
    assert Settings.from_args(server.parse_args([]), env).model_dir == Path("/models/a")
    assert server.ServerSettings.from_env({}).port == 7860
    with pytest.raises(UserInputError, match="GRADIO_SERVER_PORT"):
        server.ServerSettings.from_env({"GRADIO_SERVER_PORT": "http"})
    with pytest.raises(UserInputError, match="queue_max_size"):
        server.ServerSettings(queue_max_size=0)
    flags = {row.flag for row in server.ServerSettings.describe()} | {row.flag for row in Settings.describe()}
    assert {"--model-dir", "--host", "--port", "--share", "--queue-max-size"} <= flags


def test_main_reports_missing_weights_without_serving(tmp_path, capsys):
    assert demo.main(["--model-dir", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_main_reports_a_bad_setting_without_loading(capsys):
    assert demo.main(["--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err


def test_python_demo_py_loads_the_model_then_serves_and_names_its_linear_kernels(tiny_model_dir):
    """The entry point itself: `python demo.py` loads the model, opens the port, and says in its load line
    and in /healthz which linear kernels it took."""
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from tests.served import free_port, wait_until

    port = free_port()
    env = {**os.environ, "PACK_WEIGHTS": "true", "TORCH_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "demo.py", "--model-dir", str(tiny_model_dir), "--port", str(port)],
        cwd=Path(demo.__file__).parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        def healthy():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read()
                return False

        wait_until(healthy, timeout=120, what="python demo.py to serve")
        assert "批量分析" in httpx.get(f"http://127.0.0.1:{port}/config", timeout=10).text
        body = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        assert body["linear_layers"] == "oneDNN packed FP32 (self-check passed; PACK_WEIGHTS=true)"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert f"* Loaded {tiny_model_dir.name} in " in output
    assert "linear layers: oneDNN packed FP32" in output
