"""Starting demo.py on loopback for a benchmark, watching its memory, and stopping it.

The server is started in its own session (process group) so that stopping it stops everything it
started; traffic goes to 127.0.0.1 only. Every wait here is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .common import ROOT

DEMO = ROOT / "demo.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its children (0 if it is gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def vm_hwm(pid: int) -> int | None:
    """The kernel's peak resident set (VmHWM) of one process, in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


class RssSampler:
    """Samples a process tree's RSS every `interval` seconds in a thread; phases mark the timeline."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, str]] = []
        self.phase = "loading"
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self._t0, tree_rss(self.pid), self.phase))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak(self, phase: str | None = None) -> int:
        xs = [rss for _, rss, ph in self.samples if phase is None or ph == phase]
        return max(xs) if xs else 0


class DemoServer:
    """`python demo.py --model-dir DIR --host 127.0.0.1 --port P` as a child process."""

    def __init__(self, model_dir: Path, port: int | None = None, env: dict[str, str] | None = None,
                 demo: Path = DEMO, log_path: Path | None = None, python: str = sys.executable):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or Path(f"/tmp/bench-demo-{self.port}.log")
        self.cmd = [python, str(demo), "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", str(self.port)]
        self.env = {**os.environ, **(env or {}), "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None

    def start(self) -> "DemoServer":
        self._log = self.log_path.open("wb")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=str(ROOT), env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_healthy(self, timeout: float = 600, interval: float = 0.05) -> float:
        """Seconds from process start to the first 200 from /healthz; RuntimeError on exit or timeout."""
        import httpx

        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"demo.py exited with {self.proc.returncode}; log: {self.log_tail()}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return time.perf_counter() - self.started_at
                except httpx.HTTPError:
                    pass
                time.sleep(interval)
        raise RuntimeError(f"/healthz not OK after {timeout:.0f}s; log: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> "DemoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def infer(client, url: str, text: str, mode: str = "emotion", history: list | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """POST /api/infer; (json, None) on success, (None, reason) on any failure."""
    import httpx

    try:
        r = client.post(f"{url}/api/infer", json={"text": text, "history": history or [], "mode": mode})
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if r.status_code != 200:
        return None, f"HTTP {r.status_code}: {r.text[:200]}"
    try:
        body = r.json()
    except ValueError:
        return None, f"not JSON: {r.text[:200]}"
    if mode in ("emotion", "both") and body.get("emotion_label") not in ("正面", "负面"):
        return None, f"no emotion_label: {str(body)[:200]}"
    if mode in ("chat", "both") and not isinstance(body.get("chat_response"), str):
        return None, f"no chat_response: {str(body)[:200]}"
    return body, None
