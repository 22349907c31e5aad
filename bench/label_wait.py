"""How long a label waits while another client's long reply runs: one reply of exactly N tokens, labels sent meanwhile.

    python -m bench.label_wait --model-dir ~/.cache/qwen-allinone/real-0.5b [--reply-tokens 512 --labels 8]
    bash bench/run_at_commit.sh COMMIT -- label_wait ...   (the same, on an older commit)

In-process, through ModelService (the gate every door uses). The reply is greedy and made to run its
full length (min_new_tokens; the loop stop off), so every run does the same work. While it runs, a
second client sends sentiment-only requests one at a time, a pause apart; each label's wait is the
time from its request to its answer, next to the label's own compute time (alone, same run).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Sequence

from bench import data
from bench.common import base_parser, provenance, resolve_model_dir, result_path, summary, write_result

PROMPT = "请写一篇关于秋天的长篇散文，至少一千字。"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--reply-tokens", type=int, default=512)
    p.add_argument("--labels", type=int, default=8, help="labels sent while the reply runs")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between one label's answer and the next request")
    args = p.parse_args(argv)

    import pipeline
    from gate import Job, ModelService

    model_dir, model = resolve_model_dir(args)
    overrides = dict(chat_max_new_tokens=args.reply_tokens, do_sample=False)
    if "chat_stop_loop_tokens" in {f.name for f in dataclasses.fields(pipeline.Settings)}:
        overrides["chat_stop_loop_tokens"] = 0  # the same reply length before and after
    if args.threads:
        overrides["threads"] = args.threads
    engine = pipeline.load_engine(model_dir, **overrides)
    engine.generation_config.min_new_tokens = args.reply_tokens
    service = ModelService(engine, 8)
    texts = [t for t, _ in data.dev()][: args.labels]

    def label(text: str) -> tuple[float, float]:
        """(wall ms from request to answer, the label's own compute ms)."""
        started = time.perf_counter()
        answer = service.answer(service.prepare(text, mode="emotion"), Job())
        return (time.perf_counter() - started) * 1000, answer.sentiment.latency_ms

    def reply(first_piece: threading.Event | None = None) -> dict[str, float]:
        started, first = time.perf_counter(), None
        for answer in service.run(service.prepare(PROMPT, mode="chat"), Job()):
            if answer.stream is not None and answer.stream.text and first is None:
                first = time.perf_counter()
                if first_piece is not None:
                    first_piece.set()
        stream = answer.stream
        return {"tokens": stream.new_tokens, "wall_s": time.perf_counter() - started,
                "first_piece_s": (first or started) - started,
                "decode_tok_s": (stream.new_tokens - 1) / (time.perf_counter() - (first or started))}

    label(texts[-1])  # warm-up
    alone = [label(t) for t in texts]
    reply_alone = reply()
    print(f"label alone: median {summary(w for w, _ in alone)['median']:.0f} ms; reply alone: "
          f"{reply_alone['tokens']} tokens in {reply_alone['wall_s']:.1f} s", flush=True)

    first_piece, result = threading.Event(), {}
    runner = threading.Thread(target=lambda: result.update(reply(first_piece)))
    runner.start()
    first_piece.wait()
    during = []
    for text in texts:
        if not runner.is_alive():
            break
        wall, compute = label(text)
        during.append({"wall_ms": wall, "compute_ms": compute, "reply_still_running": runner.is_alive()})
        print(f"label during the reply: waited {wall:.0f} ms (compute {compute:.0f} ms)", flush=True)
        time.sleep(args.pause)
    runner.join()
    out = {
        "bench": "label_wait",
        "provenance": provenance(model, engine),
        "reply_tokens": args.reply_tokens,
        "label_alone_ms": summary(w for w, _ in alone),
        "label_compute_alone_ms": summary(c for _, c in alone),
        "label_during_reply_ms": summary(d["wall_ms"] for d in during),
        "labels_during_reply": during,
        "reply_alone": reply_alone,
        "reply_with_labels": result,
    }
    path = write_result(result_path(args, "label_wait", model), out)
    print(f"during a {args.reply_tokens}-token reply: label median {out['label_during_reply_ms']['median']:.0f} ms, "
          f"max {out['label_during_reply_ms']['max']:.0f} ms; alone {out['label_alone_ms']['median']:.0f} ms; "
          f"reply {reply_alone['wall_s']:.1f} s alone, {result['wall_s']:.1f} s with labels -> {path}")
    return out


if __name__ == "__main__":
    main()
