"""Packing: the whole engine with oneDNN-packed linear layers against torch's F.linear, taking turns.

    python -m bench.packing --model-dir DIR [--reviews 40] [--rounds 6] [--decode-steps 16] [--prefill 300]
    python -m bench.packing --shape qwen1.5-0.5b

Loads the engine twice, PACK_WEIGHTS=true and PACK_WEIGHTS=false, and times the three kinds of work the
app does on each, the two engines taking turns item by item (who goes first alternating) so a noisy
neighbour hits both alike: a label (`classify` on held-out reviews: a review's tens of rows), a decode
step (one row: the chat's time per token, after a 118-token prompt, on a GrowingCache as the engine
decodes) and a prefill (a chat prompt of --prefill tokens). It also records the start-up probe that
decides which path the app takes (`Engine._packing_decision`) and what it chose here.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Sequence

import torch

from pipeline.engine import ONE_ROW_SHARE
from pipeline.growing_cache import GrowingCache
from pipeline.routing import Mode

from . import data
from .common import base_parser, in_worker_thread, load, provenance, resolve_model_dir, result_path, write_result

KINDS = ("packed", "F.linear")


def decode_step_ms(engine, prompt: torch.Tensor, steps: int) -> float:
    """Median ms of greedy decode steps after the prompt, on a GrowingCache as the engine decodes."""
    times = []
    with torch.inference_mode():
        cache = GrowingCache()
        out = engine.model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1:].argmax(-1)
        for _ in range(steps):
            started = time.perf_counter()
            out = engine.model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1:].argmax(-1)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def prefill_ms(engine, prompt: torch.Tensor) -> float:
    with torch.inference_mode():
        started = time.perf_counter()
        engine.model(input_ids=prompt, past_key_values=GrowingCache(), use_cache=True, logits_to_keep=1)
        return (time.perf_counter() - started) * 1000


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--reviews", type=int, default=40, help="held-out reviews classified by each engine")
    p.add_argument("--rounds", type=int, default=6, help="decode and prefill rounds per engine")
    p.add_argument("--decode-steps", type=int, default=16)
    p.add_argument("--prefill", type=int, default=300, help="prompt tokens of the prefill timed")
    args = p.parse_args(argv)
    model_dir, model = resolve_model_dir(args)
    engines = {"packed": load(model_dir, threads=args.threads, pack_weights=True),
               "F.linear": load(model_dir, threads=args.threads, pack_weights=False)}
    probe_engine = load(model_dir, threads=args.threads)  # as the app loads it: the probe decides
    chosen = probe_engine.linear_path
    del probe_engine
    prov = provenance(model, engines["packed"])
    prov["linear_path"] = chosen

    def timed():
        first = engines["packed"]
        requests = [first.prepare(text, mode=Mode.EMOTION, tags=False) for text, _ in data.heldout(args.reviews)]
        generator = torch.Generator().manual_seed(0)
        vocab = first.model.config.vocab_size
        decode_prompt = torch.randint(100, vocab - 100, (1, 118), generator=generator)
        prefill_prompt = torch.randint(100, vocab - 100, (1, args.prefill), generator=generator)
        for engine in engines.values():  # warm-up: kernel creation for these shapes
            engine.classify(requests[0])
            decode_step_ms(engine, decode_prompt, 2)
        times: dict[str, dict[str, list[float]]] = {k: {"label_ms": [], "decode_step_ms": [], "prefill_ms": []}
                                                     for k in KINDS}
        same_labels = 0
        for i, request in enumerate(requests):
            labels = {}
            for kind in (KINDS if i % 2 == 0 else KINDS[::-1]):
                started = time.perf_counter()
                labels[kind] = engines[kind].classify(request).label
                times[kind]["label_ms"].append((time.perf_counter() - started) * 1000)
            same_labels += labels["packed"] == labels["F.linear"]
        for i in range(args.rounds):
            for kind in (KINDS if i % 2 == 0 else KINDS[::-1]):
                times[kind]["decode_step_ms"].append(decode_step_ms(engines[kind], decode_prompt, args.decode_steps))
                times[kind]["prefill_ms"].append(prefill_ms(engines[kind], prefill_prompt))
        return times, same_labels, len(requests)

    times, same_labels, n = in_worker_thread(timed)
    medians = {kind: {what: statistics.median(v) for what, v in by.items()} for kind, by in times.items()}
    speedup = {what: medians["F.linear"][what] / medians["packed"][what] for what in medians["packed"]}
    # The decision's own weighting, applied to whole-engine times: decode steps vs a label's rows.
    weighted = 1 / (ONE_ROW_SHARE / speedup["decode_step_ms"] + (1 - ONE_ROW_SHARE) / speedup["label_ms"])
    for what, x in speedup.items():
        print(f"{what}: packed {medians['packed'][what]:.1f}, F.linear {medians['F.linear'][what]:.1f} "
              f"-> packed {x:.2f}x as fast", file=sys.stderr)
    print(f"weighted ({ONE_ROW_SHARE:.0%} decoding): packed {weighted:.2f}x; the app chose: {chosen}", file=sys.stderr)
    result = {"bench": "packing", "provenance": prov, "reviews": n, "rounds": args.rounds,
              "decode_steps": args.decode_steps, "prefill_tokens": args.prefill, "times": times,
              "median_ms": medians, "packed_speedup": speedup, "one_row_share": ONE_ROW_SHARE,
              "weighted_packed_speedup": weighted, "same_labels": same_labels, "app_linear_path": chosen}
    write_result(result_path(args, "packing", model), result)
    return result


if __name__ == "__main__":
    main()
