"""Start-up and memory: process start to /healthz OK; peak RSS while loading and while serving.

    python -m bench.startup --model-dir DIR [--reps 2] [--serve-requests 6]

Starts `python demo.py --model-dir DIR --host 127.0.0.1 --port P` (its own process group; stopped at
the end), polls GET /healthz every 50 ms, and samples the server's resident memory (process and
children) every 50 ms; the kernel's own high-water mark (VmHWM) is read at /healthz OK (peak while
loading) and after a few /api/infer requests (peak while serving). The limit it is compared with:
the FP32 weight bytes (the safetensors files), which must be resident to serve at all. The start-up
limit: a fresh `import torch, transformers, gradio` plus one read of the weight files.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import data
from .chat import history_messages
from .common import base_parser, provenance, resolve_model_dir, result_path, summary, write_result
from .server import DEMO, DemoServer, RssSampler, infer, vm_hwm


def weight_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors"))


def read_seconds(model_dir: Path, chunk: int = 64 << 20) -> float:
    """Seconds to read every safetensors byte once (from the page cache after a start-up)."""
    started = time.perf_counter()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with path.open("rb", buffering=0) as f:
            buf = bytearray(chunk)
            while f.readinto(buf):
                pass
    return time.perf_counter() - started


def import_seconds(python: str = sys.executable) -> float:
    """Seconds for a bare `import torch, transformers, gradio` in a fresh interpreter (no model)."""
    import subprocess

    started = time.perf_counter()
    subprocess.run([python, "-c", "import torch, transformers, gradio"], check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def worst_case_requests(client, url: str) -> list[dict[str, Any]]:
    """The largest requests the default settings admit: a sentiment text near MAX_INPUT_TOKENS (1024),
    then a chat whose history fills HISTORY_TOKEN_BUDGET (2048), generating up to CHAT_MAX_NEW_TOKENS,
    while two earlier such conversations fill the conversation KV store (KV_CACHE_MB)."""
    long_text = "".join(t for t, _ in data.heldout(400))
    out = []
    for chars in (1500, 1300, 1100, 900, 700):  # the longest that stays under the token limit
        t0 = time.perf_counter()
        body, error = infer(client, url, long_text[:chars], "emotion")
        if error is None or "too long" not in error:
            out.append({"mode": "emotion", "chars": chars, "ms": (time.perf_counter() - t0) * 1000, "error": error})
            break
    # Two other conversations at the full history budget first: with them the conversation KV store is
    # full (KV_CACHE_MB) while the last one runs, as on a server that has been talking for a while.
    for k in (1, 2):
        t0 = time.perf_counter()
        history = [{"role": "user", "content": f"第{k}位用户：你好"}, {"role": "assistant", "content": "你好！"}]
        body, error = infer(client, url, "请把我们聊过的内容总结一下。", "chat", history + history_messages(8) * 6)
        out.append({"mode": "chat", "fills_kv_store": k, "ms": (time.perf_counter() - t0) * 1000, "error": error})
    t0 = time.perf_counter()
    body, error = infer(client, url, "请把我们聊过的内容总结成一篇详细的长文。", "chat", history_messages(8) * 6)
    out.append({"mode": "chat", "history_messages": 96, "ms": (time.perf_counter() - t0) * 1000, "error": error,
                "reply_chars": len((body or {}).get("chat_response") or "")})
    return out


def one_startup(model_dir: Path, serve_requests: int, env: dict[str, str], timeout: float, demo: Path,
                worst_case: bool = False) -> dict[str, Any]:
    import httpx

    server = DemoServer(model_dir, env=env, demo=demo)
    server.start()
    sampler = RssSampler(server.proc.pid)
    try:
        ready_s = server.wait_healthy(timeout)
        hwm_loading = vm_hwm(server.proc.pid)
        # The server's load line names the linear layers' path, which changes both speed and memory.
        load_line = next((line for line in server.log_tail(1 << 20).splitlines() if line.startswith("* Loaded")), None)
        sampler.phase = "serving"
        texts = [t for t, _ in data.dev(2 * serve_requests)]
        requests = []
        with httpx.Client(timeout=300, trust_env=False) as client:
            for i in range(serve_requests):
                mode = "both" if i % 3 == 2 else "emotion"
                history = history_messages(3) if mode == "both" else None
                t0 = time.perf_counter()
                body, error = infer(client, server.url, texts[i % len(texts)], mode, history)
                requests.append({"mode": mode, "ms": (time.perf_counter() - t0) * 1000, "error": error})
            if worst_case:
                requests += worst_case_requests(client, server.url)
        time.sleep(0.3)
        hwm_serving = vm_hwm(server.proc.pid)
    finally:
        sampler.stop()
        rc = server.stop()
    return {"ready_s": ready_s, "load_line": load_line, "vmhwm_loading": hwm_loading, "vmhwm_after_serving": hwm_serving,
            "sampled_peak_loading": sampler.peak("loading"), "sampled_peak_serving": sampler.peak("serving"),
            "rss_at_ready": next((rss for t, rss, ph in sampler.samples if ph == "serving"), None),
            "requests": requests, "errors": sum(r["error"] is not None for r in requests), "exit_code": rc,
            "timeline": [(round(t, 3), rss) for t, rss, _ in sampler.samples[::4]]}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=2, help="start-ups (the first may find a cold page cache)")
    p.add_argument("--serve-requests", type=int, default=6)
    p.add_argument("--chat-max-new-tokens", type=int, default=32, help="CHAT_MAX_NEW_TOKENS for the server (bounds the run)")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--worst-case", action="store_true",
                   help="also send the largest requests the default limits admit (see worst_case_requests); "
                        "use with --chat-max-new-tokens 512 for the default reply length")
    p.add_argument("--demo", type=Path, default=DEMO, help="the app to start (default: demo.py)")
    args = p.parse_args(argv)
    model_dir, model = resolve_model_dir(args)
    env = {"CHAT_MAX_NEW_TOKENS": str(args.chat_max_new_tokens)}
    if args.threads:
        env["TORCH_THREADS"] = str(args.threads)
    prov = provenance(model)
    runs = []
    for i in range(args.reps):
        run = one_startup(model_dir, args.serve_requests, env, args.timeout, args.demo, args.worst_case)
        runs.append(run)
        print(f"start-up {i + 1}: /healthz OK after {run['ready_s']:.2f} s; peak RSS loading "
              f"{(run['vmhwm_loading'] or 0) / 2**30:.2f} GiB, serving {(run['vmhwm_after_serving'] or 0) / 2**30:.2f} GiB; "
              f"errors {run['errors']}", file=sys.stderr, flush=True)
    wb = weight_bytes(model_dir)
    imports = min(import_seconds() for _ in range(2))
    read = min(read_seconds(model_dir) for _ in range(2))
    peak_loading = max(max(r["vmhwm_loading"] or 0, r["sampled_peak_loading"]) for r in runs)
    # VmHWM is a lifetime high-water mark (it includes loading), so the serving figure is sampled.
    peak_serving = max(r["sampled_peak_serving"] for r in runs)
    result = {"bench": "startup", "provenance": prov, "server_env": env, "demo": str(args.demo),
              "worst_case": args.worst_case,
              "weight_bytes_fp32": wb, "ready_s": summary(r["ready_s"] for r in runs),
              "limit": {"import_s": imports, "read_weights_s": read, "ready_s": imports + read,
                        "what": "a fresh `import torch, transformers, gradio` plus one read of the weight files "
                                "(page cache warm): the least any start-up of this app can take"},
              "peak_rss_loading": peak_loading, "peak_rss_serving": peak_serving,
              "peak_loading_over_weights": peak_loading / wb if wb else None,
              "peak_serving_over_weights": peak_serving / wb if wb else None,
              "errors": sum(r["errors"] for r in runs), "runs": runs}
    write_result(result_path(args, "startup", model, "worst-case" if args.worst_case else ""), result)
    return result


if __name__ == "__main__":
    main()
