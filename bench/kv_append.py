"""KV append: a decode step with transformers' DynamicCache against the engine's GrowingCache, by context.

    python -m bench.kv_append --shape qwen1.5-0.5b [--contexts 150,600,1500] [--steps 32] [--reps 3]
    python -m bench.kv_append --model-dir DIR

DynamicCache concatenates each layer's whole cache with every new token (torch.cat: read, freshly
allocated, written); GrowingCache (pipeline/growing_cache.py) writes the token into spare room. Both
read the same prompt (the bench conversation repeated to the context), then take turns token by token,
who goes first alternating, so a noisy neighbour hits both alike; each step is timed alone. The same
token is fed to both: their logits are equal bit for bit (tests/test_growing_cache.py), checked here too.
What the copy costs grows with the KV per token: 196,608 bytes for Qwen1.5-0.5B (no grouped-query
attention), 24,576 for the Qwen2.5 stand-in (2 KV heads).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Sequence

import torch
from transformers import DynamicCache

from pipeline.growing_cache import GrowingCache

from .chat import HISTORY, MESSAGE, history_messages
from .common import base_parser, in_turn, in_worker_thread, load, provenance, resolve_model_dir, result_path, summary, write_result

CACHES = {"DynamicCache": DynamicCache, "GrowingCache": GrowingCache}


def compare(engine, context: int, steps: int) -> dict[str, Any]:
    """One round at one context: per-step times of both caches, taking turns; and whether their logits agreed."""
    base = list(engine.prepare(MESSAGE, history_messages(len(HISTORY)), mode="chat", tags=False).prompt_ids)
    prompt_ids = (base * (context // len(base) + 1))[:context]  # the conversation repeated: same cost per token
    model, caches = engine.model, {name: cls() for name, cls in CACHES.items()}
    times: dict[str, list[float]] = {name: [] for name in CACHES}
    same = True
    with torch.inference_mode():
        logits = {}
        for name, cache in caches.items():
            out = model(input_ids=torch.tensor([prompt_ids]), past_key_values=cache, use_cache=True, logits_to_keep=1)
            logits[name] = out.logits[0, -1]
        for step in range(steps):
            token = int(logits["DynamicCache"].argmax())
            same = same and torch.equal(logits["DynamicCache"], logits["GrowingCache"])
            for name in in_turn(CACHES, step):
                started = time.perf_counter()
                out = model(input_ids=torch.tensor([[token]]), past_key_values=caches[name], use_cache=True,
                            logits_to_keep=1)
                logits[name] = out.logits[0, -1]
                times[name].append((time.perf_counter() - started) * 1000)
    return {"times": times, "same_logits": same}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--contexts", default="150,600,1500", help="prompt lengths in tokens, comma-separated")
    p.add_argument("--steps", type=int, default=32, help="decode steps per cache per round")
    p.add_argument("--reps", type=int, default=3, help="rounds per context")
    args = p.parse_args(argv)
    model_dir, model = resolve_model_dir(args)
    engine = load(model_dir, threads=args.threads)
    prov = provenance(model, engine)
    contexts = [int(x) for x in args.contexts.split(",") if x]

    def timed():
        compare(engine, 64, 4)  # warm-up
        rows = []
        for context in contexts:
            rounds = [compare(engine, context, args.steps) for _ in range(args.reps)]
            times = {name: [t for r in rounds for t in r["times"][name]] for name in CACHES}
            row = {"context": context, "step_ms": {name: summary(v) for name, v in times.items()},
                   "same_logits": all(r["same_logits"] for r in rounds),
                   "kv_mb_at_context": engine.kv_bytes_per_token * context / 2**20}
            row["growing_speedup"] = row["step_ms"]["DynamicCache"]["median"] / row["step_ms"]["GrowingCache"]["median"]
            rows.append(row)
            print(f"context {context}: decode step DynamicCache {row['step_ms']['DynamicCache']['median']:.1f} ms, "
                  f"GrowingCache {row['step_ms']['GrowingCache']['median']:.1f} ms "
                  f"({row['growing_speedup']:.2f}x; logits equal: {row['same_logits']})", file=sys.stderr, flush=True)
        return rows

    rows = in_worker_thread(timed)
    result = {"bench": "kv_append", "provenance": prov, "steps": args.steps, "reps": args.reps,
              "kv_bytes_per_token": engine.kv_bytes_per_token, "by_context": rows}
    write_result(result_path(args, "kv-append", model), result)
    return result


if __name__ == "__main__":
    main()
