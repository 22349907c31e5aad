"""Packing: the whole engine with oneDNN-packed linear layers against torch's F.linear, taking turns.

    python -m bench.packing --model-dir DIR [--reviews 40] [--rounds 10] [--decode-steps 16] [--turns 3]
    python -m bench.packing --shape qwen1.5-0.5b

Loads the engine twice, PACK_WEIGHTS=true and PACK_WEIGHTS=false, and times the three kinds of work the
app does on each, the two engines taking turns item by item (who goes first alternating) so a noisy
neighbour hits both alike: a label (`classify` on held-out reviews: a review's tens of rows), and
bench.chat's bare loop on its conversation with --turns turns of history: the prompt's prefill (hundreds
of rows), then greedy decode steps (one row each: the chat's time per token). It also records the
start-up probe that decides which path the app takes (`Engine._packing_decision`) and what it chose here.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from typing import Any, Sequence

from pipeline.engine import ONE_ROW_SHARE, PACKING_MIN_GAIN, Engine
from pipeline.packing import PackingProbe
from pipeline.routing import Mode

from . import data
from .chat import bare_run
from .common import base_parser, in_turn, in_worker_thread, load, provenance, resolve_model_dir, result_path, write_result

KINDS = ("packed", "F.linear")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--reviews", type=int, default=40, help="held-out reviews classified by each engine")
    p.add_argument("--rounds", type=int, default=10, help="bare-loop runs (a prefill and its decode steps) per engine")
    p.add_argument("--decode-steps", type=int, default=16)
    p.add_argument("--turns", type=int, default=3, help="turns of history in the prompt (bench.chat's conversation)")
    args = p.parse_args(argv)
    model_dir, model = resolve_model_dir(args)
    engines = {"packed": load(model_dir, threads=args.threads, pack_weights=True),
               "F.linear": load(model_dir, threads=args.threads, pack_weights=False)}
    # What the app would choose here: its start-up probe, run on the dense engine's weights.
    dense = engines["F.linear"]
    _, _, chosen = Engine._packing_decision(dense.model, dataclasses.replace(dense.settings, pack_weights=None))
    prov = provenance(model, engines["packed"])
    prov["linear_path"] = chosen

    def timed():
        first = engines["packed"]
        requests = [first.prepare(text, mode=Mode.EMOTION, tags=False) for text, _ in data.heldout(args.reviews)]
        for engine in engines.values():  # warm-up: kernel creation for these shapes
            engine.classify(requests[0])
            bare_run(engine, args.turns, 3)
        times: dict[str, dict[str, list[float]]] = {k: {"label_ms": [], "decode_step_ms": [], "prefill_ms": []}
                                                     for k in KINDS}
        same_labels = 0
        for i, request in enumerate(requests):
            labels = {}
            for kind in in_turn(KINDS, i):
                started = time.perf_counter()
                labels[kind] = engines[kind].classify(request).label
                times[kind]["label_ms"].append((time.perf_counter() - started) * 1000)
            same_labels += labels["packed"] == labels["F.linear"]
        prompt_tokens = 0
        for i in range(args.rounds):
            for kind in in_turn(KINDS, i):
                run = bare_run(engines[kind], args.turns, args.decode_steps + 1)
                times[kind]["decode_step_ms"].append(run["step_ms"]["median"])
                times[kind]["prefill_ms"].append(run["prefill_ms"])
                prompt_tokens = run["prompt_tokens"]
        return times, same_labels, len(requests), prompt_tokens

    times, same_labels, n, prompt_tokens = in_worker_thread(timed)
    medians = {kind: {what: statistics.median(v) for what, v in by.items()} for kind, by in times.items()}
    speedup = {what: medians["F.linear"][what] / medians["packed"][what] for what in medians["packed"]}
    # The decision's own weighting, applied to whole-engine times: decode steps (1 row) vs labels (~40 rows).
    weighted = PackingProbe({1: speedup["decode_step_ms"], 40: speedup["label_ms"]}, "").weighted(ONE_ROW_SHARE)
    for what, x in speedup.items():
        print(f"{what}: packed {medians['packed'][what]:.1f}, F.linear {medians['F.linear'][what]:.1f} "
              f"-> packed {x:.2f}x as fast", file=sys.stderr)
    print(f"weighted ({ONE_ROW_SHARE:.0%} decoding): packed {weighted:.2f}x; the app chose: {chosen}", file=sys.stderr)
    result = {"bench": "packing", "provenance": prov, "reviews": n, "rounds": args.rounds,
              "decode_steps": args.decode_steps, "turns": args.turns, "prefill_tokens": prompt_tokens, "times": times,
              "median_ms": medians, "packed_speedup": speedup, "one_row_share": ONE_ROW_SHARE, "min_gain": PACKING_MIN_GAIN,
              "weighted_packed_speedup": weighted, "same_labels": same_labels, "app_linear_path": chosen}
    write_result(result_path(args, "packing", model), result)
    return result


if __name__ == "__main__":
    main()
