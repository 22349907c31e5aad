"""A reply under a label flood: eight clients send labels without pause; a chat is sent a few seconds in.

    python -m bench.flood --model-dir ~/.cache/qwen-allinone/real-0.5b [--flood-s 30 --passes none,16,8,4,2]

In-process, through ModelService (the gate every door uses), on one engine. Each run floods for
--flood-s seconds; the reply's time to first piece is measured from its send, next to whether the
flood still ran then, and the labels' wait from request to answer (the whole flood). Runs: one per
max_label_passes value (max_label_pass_ms off, so the count alone acts), one with the defaults, and
one per max_per_client value with the flood from a single client, where a second client's labels
(one at a time) are timed and the flood's busy answers counted.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

from bench import data
from bench.common import (
    CpuShare,
    base_parser,
    load,
    provenance,
    resolve_model_dir,
    result_path,
    summary,
    write_result,
)

PROMPT = "请用三句话介绍一下杭州。"


def number(value: str) -> int | None:
    return None if value == "none" else int(value)


def flood(service, texts: list[str], seconds: float, reply_at: float | None, clients: list[str],
          probe: str | None = None) -> dict[str, Any]:
    """One run: a thread per entry of clients sends labels until the end; a reply at reply_at s; a probe client."""
    from app.gate import Busy, Job

    stop, waits, probe_waits, busy = threading.Event(), [], [], [0]
    reply: dict[str, Any] = {}
    start = time.perf_counter()

    def label(client: str, i: int, into: list) -> None:
        sent = time.perf_counter()
        try:
            service.answer(service.prepare(texts[i % len(texts)], mode="emotion"), Job(client))
            into.append((time.perf_counter() - sent) * 1000)
        except Busy:
            busy[0] += 1
            stop.wait(0.05)  # told busy: try again soon (Retry-After), without spinning on the lock

    def sender(n: int, client: str, into: list) -> None:
        i = n * 37
        while not stop.is_set():
            label(client, i, into)
            i += 1

    def chat() -> None:
        sent = time.perf_counter()
        for answer in service.run(service.prepare(PROMPT, mode="chat"), Job("reply-client")):
            if answer.stream is not None and answer.stream.text and "ttft_s" not in reply:
                reply.update(ttft_s=time.perf_counter() - sent, flood_running=not stop.is_set(),
                             at_s=time.perf_counter() - start)
        reply.update(tokens=answer.stream.new_tokens, wall_s=time.perf_counter() - sent)

    threads = [threading.Thread(target=sender, args=(n, c, waits)) for n, c in enumerate(clients)]
    if probe:
        threads.append(threading.Thread(target=sender, args=(99, probe, probe_waits)))
    for t in threads:
        t.start()
    chatter = None
    if reply_at is not None:
        stop.wait(reply_at)
        chatter = threading.Thread(target=chat)
        chatter.start()
    stop.wait(max(0.0, seconds - (time.perf_counter() - start)))
    stop.set()
    for t in threads:
        t.join()
    if chatter is not None:
        chatter.join()
    out = {"labels_ms": summary(waits), "busy": busy[0], "label_passes": service.gate.label_passes}
    if reply:
        out["reply"] = reply
    if probe:
        out["probe_labels_ms"] = summary(probe_waits)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--flood-s", type=float, default=30.0)
    p.add_argument("--reply-at", type=float, default=4.0, help="seconds into the flood the chat is sent")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--reply-tokens", type=int, default=32)
    p.add_argument("--passes", default="none,16,8,4,2", help="max_label_passes values; none = no bound (before)")
    p.add_argument("--caps", default="none,4,2", help="max_per_client values, flood from one client")
    args = p.parse_args(argv)

    from app.gate import MAX_LABEL_PASS_MS, MAX_LABEL_PASSES, MAX_PER_CLIENT, Job
    from app.service import ModelService

    model_dir, model = resolve_model_dir(args)
    engine = load(model_dir, args.threads, chat_max_new_tokens=args.reply_tokens, do_sample=False)
    texts = [t for t, _ in data.dev()]
    service = ModelService(engine, 16)
    alone = [service.answer(service.prepare(t, mode="emotion"), Job()).sentiment.latency_ms
             for t in texts[:20]]
    print(f"label alone: median {summary(alone)['median']:.0f} ms", flush=True)
    clients = [f"ip:10.0.0.{n}" for n in range(args.clients)]
    runs = []
    plan = [{"max_label_passes": k, "max_label_pass_ms": None} for k in map(number, args.passes.split(","))]
    plan.append({"max_label_passes": MAX_LABEL_PASSES, "max_label_pass_ms": MAX_LABEL_PASS_MS})
    for gate_settings in plan:
        service = ModelService(engine, 16, max_per_client=MAX_PER_CLIENT, **gate_settings)
        share = CpuShare()
        run = {**gate_settings, **flood(service, texts, args.flood_s, args.reply_at, clients), "cpu": share.stop()}
        runs.append(run)
        r, lab = run["reply"], run["labels_ms"]
        print(f"K={gate_settings}: reply first piece {r['ttft_s']:.1f} s (flood running: {r['flood_running']}), "
              f"labels median {lab['median']:.0f} ms p95 {lab['p95']:.0f} ms n={lab['n']}", flush=True)
    for cap in map(number, args.caps.split(",")):
        service = ModelService(engine, 16, max_per_client=cap)
        share = CpuShare()
        run = {"max_per_client": cap, "one_client_flood": True,
               **flood(service, texts, args.flood_s, None, [clients[0]] * args.clients, probe="ip:10.0.0.99"),
               "cpu": share.stop()}
        runs.append(run)
        pr = run["probe_labels_ms"]
        print(f"cap={cap}: other client's label median {pr['median']:.0f} ms p95 {pr['p95']:.0f} ms; "
              f"flood labels median {run['labels_ms']['median']:.0f} ms, busy answers {run['busy']}", flush=True)
    out = {"bench": "flood", "provenance": provenance(model, engine), "flood_s": args.flood_s,
           "reply_at_s": args.reply_at, "clients": args.clients, "reply_tokens": args.reply_tokens,
           "label_alone_ms": summary(alone), "runs": runs}
    write_result(result_path(args, "flood", model), out)
    return out


if __name__ == "__main__":
    main()
