"""Concurrency: 1, 4 and 8 concurrent /api/infer clients on loopback: throughput, p50/p95, errors.

    python -m bench.concurrency --model-dir DIR [--clients 1,4,8] [--requests 4] [--mode emotion]
    python -m bench.concurrency --url http://127.0.0.1:7860   (a server already running)

Each client is a thread with its own HTTP connection sending --requests requests back to back (each
level also stops at --level-budget seconds: bounded in count and in time). Texts come from a fixed
pool of --texts dev-set reviews, client k's i-th request taking text (k + i) mod pool size, so every
level sends the same mix. The server's own model time per request (inference_time_ms.total) is
recorded too, separating "the model got slower" from "requests waited longer".
Any non-200, non-JSON, or reply without the expected fields is an error (there must be none).

The limit: the engine runs one model call at a time (on 2 cores, two interleaved forwards are no
faster than two in a row), so the best throughput at any concurrency is the single-client one, and
the best latency at c clients is about c x the single-client latency. The figures show how close
the server's queueing comes to that.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from . import data
from .chat import history_messages
from .common import CpuShare, base_parser, percentile, provenance, resolve_model_dir, result_path, summary, write_result
from .server import DEMO, DemoServer, infer


def run_level(url: str, clients: int, requests: int, budget: float, mode: str, texts: list[str],
              history: list | None) -> dict[str, Any]:
    import httpx

    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + budget
    barrier = threading.Barrier(clients)

    def worker(k: int) -> None:
        with httpx.Client(timeout=httpx.Timeout(max(5.0, budget), connect=10.0), trust_env=False) as client:
            barrier.wait(30)
            for i in range(requests):
                if time.monotonic() > deadline:
                    break
                text = texts[(k + i) % len(texts)]  # every level sends each text equally often
                t0 = time.perf_counter()
                body, error = infer(client, url, text, mode, history)
                ms = (time.perf_counter() - t0) * 1000
                server_ms = (body or {}).get("inference_time_ms")
                with lock:
                    results.append({"client": k, "ms": ms, "error": error, "server_ms": server_ms,
                                    "end": time.perf_counter()})

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    cpu = CpuShare()
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(budget + 120)
    wall = max((r["end"] for r in results), default=time.perf_counter()) - started
    share = cpu.stop()
    ok = [r["ms"] for r in results if r["error"] is None]
    model_ms = [r["server_ms"].get("total") for r in results
                if r["error"] is None and isinstance(r.get("server_ms"), dict) and r["server_ms"].get("total")]
    return {"clients": clients, "requests_sent": len(results), "ok": len(ok),
            "errors": len(results) - len(ok), "error_samples": [r["error"] for r in results if r["error"]][:5],
            "wall_s": wall, "throughput_rps": len(ok) / wall if wall > 0 else None,
            "latency_ms": summary(ok), "p50_ms": percentile(ok, 50), "p95_ms": percentile(ok, 95),
            "server_model_ms": summary(model_ms), "cpu_share": share,
            "stuck_threads": sum(t.is_alive() for t in threads),
            "requests": [{k: v for k, v in r.items() if k != "end"} for r in results]}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--url", default=None, help="use this running server instead of starting demo.py")
    p.add_argument("--clients", default="1,4,8")
    p.add_argument("--requests", type=int, default=4, help="requests per client per level")
    p.add_argument("--level-budget", type=float, default=240, help="seconds per level at most")
    p.add_argument("--texts", type=int, default=4, help="size of the text pool (dev-set reviews)")
    p.add_argument("--mode", default="emotion", choices=("emotion", "chat", "both"))
    p.add_argument("--history-turns", type=int, default=0, help="turns of history sent with each request")
    p.add_argument("--chat-max-new-tokens", type=int, default=32, help="CHAT_MAX_NEW_TOKENS for the server started here")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for /healthz")
    p.add_argument("--demo", type=Path, default=DEMO)
    args = p.parse_args(argv)
    levels = [int(x) for x in args.clients.split(",")]
    # A fixed pool of dev-set reviews; with --requests a multiple of its size, every level sends the
    # same mix, so levels differ only in concurrency.
    texts = [t for t, _ in data.dev()][: args.texts]
    history = history_messages(args.history_turns) if args.history_turns else None
    server = None
    if args.url:
        url, model = args.url.rstrip("/"), {"kind": "server", "tag": "server", "dir": args.url}
    else:
        model_dir, model = resolve_model_dir(args)
        # Every simulated client connects from this host: one address, so the per-client bound is lifted to
        # measure the line itself (QUEUE_MAX_SIZE still applies).
        env = {"CHAT_MAX_NEW_TOKENS": str(args.chat_max_new_tokens), "MAX_PER_CLIENT": "1000"}
        if args.threads:
            env["TORCH_THREADS"] = str(args.threads)
        server = DemoServer(model_dir, env=env, demo=args.demo).start()
        url = server.url
    prov = provenance(model)
    try:
        if server:
            server.wait_healthy(args.timeout)
        run_level(url, 1, 2, 60, args.mode, [t for t, _ in data.dev()][-2:], history)  # warm-up
        rows = []
        for c in levels:
            row = run_level(url, c, args.requests, args.level_budget, args.mode, texts, history)
            rows.append(row)
            print(f"{c} clients: {row['ok']}/{row['requests_sent']} ok, {row['throughput_rps']:.2f} req/s, "
                  f"p50 {row['p50_ms'] or 0:.0f} ms, p95 {row['p95_ms'] or 0:.0f} ms, errors {row['errors']}; "
                  f"server-side model time median {row['server_model_ms'].get('median') or 0:.0f} ms; "
                  f"cpu {row['cpu_share']}",
                  file=sys.stderr, flush=True)
    finally:
        if server:
            server.stop()
    base = rows[0] if rows and rows[0]["clients"] == 1 else None
    for row in rows:
        if base and base["throughput_rps"] and base["p50_ms"]:
            row["limit"] = {"throughput_rps": base["throughput_rps"], "p50_ms": row["clients"] * base["p50_ms"]}
            row["throughput_vs_single"] = row["throughput_rps"] / base["throughput_rps"] if row["throughput_rps"] else None
    result = {"bench": "concurrency", "provenance": prov, "mode": args.mode, "history_turns": args.history_turns,
              "requests_per_client": args.requests, "level_budget_s": args.level_budget,
              "server_env": None if args.url else env, "errors": sum(r["errors"] for r in rows), "levels": rows}
    write_result(result_path(args, "concurrency", model, args.mode), result)
    return result


if __name__ == "__main__":
    main()
