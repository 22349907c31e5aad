"""The results tables (into bench/README.md, between markers) and the plots, from bench/results/*.json.

    python -m bench.report [--results bench/results] [--readme bench/README.md] [--stdout]

Tables and plots only: every number is read from a result file, and each row names the file it came
from. What the numbers mean is written by hand in bench/README.md, outside the generated blocks.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

from .common import BENCH_DIR, RESULTS_DIR

START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
BENCHES = ("sentiment", "injection", "chat", "kv_append", "packing", "startup", "concurrency", "batch")
POS, NEG = "正面", "负面"


def load_results(results_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            r = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(r, dict) and r.get("bench") in BENCHES:  # other tools' files may live here too
            out.append((path, r))
    return out


def _tag(r: dict[str, Any]) -> str:
    return (r.get("provenance", {}).get("model") or {}).get("tag", "?")


def _f(x, fmt="{:.1f}", none="—"):
    return none if x is None else fmt.format(x)


def _pct(x):
    return _f(x, "{:.1%}")


def _gib(x):
    return _f(x / 2**30 if x is not None else None, "{:.2f} GiB")


def _sentiment_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    m, rows = r["methods"], []
    ours, seed = m.get("ours"), m.get("seed")
    fl = r.get("floor", {})
    n = r["split"]["items_run"]
    random = "accuracy_meaningless" in r
    lo = ours["latency_ms"] if ours else {}
    ls = seed["latency_ms"] if seed else {}
    rows.append([f"Sentiment latency, median ({n} held-out)", _f(lo.get("median"), "{:.0f} ms"), _f(ls.get("median"), "{:.0f} ms"),
                 _f(fl.get("floor_ms", {}).get("median"), "{:.0f} ms"),
                 _f(fl.get("ours_over_floor", {}).get("median"), "{:.2f}× floor") + "; seed/ours " +
                 _f(r.get("speedup", {}).get("median"), "{:.2f}×"), name])
    rows.append([f"Sentiment latency, p90 ({n})", _f(lo.get("p90"), "{:.0f} ms"), _f(ls.get("p90"), "{:.0f} ms"),
                 _f(fl.get("floor_ms", {}).get("p90"), "{:.0f} ms"),
                 "seed/ours " + _f(r.get("speedup", {}).get("p90"), "{:.2f}×"), name])
    variants = r.get("speedup", {}).get("variants_over_ours_median", {})
    prev = m.get("previous")
    if prev and ours:
        rows.append([f"Sentiment latency, median ({n}): this layout vs the previous release's prompt (same scorer, same run)",
                     _f(lo.get("median"), "{:.0f} ms"), _f(prev["latency_ms"].get("median"), "{:.0f} ms") + " (previous)", "",
                     "ours/previous " + _f(lo["median"] / prev["latency_ms"]["median"], "{:.2f}×") +
                     ("" if random else "; previous accuracy " + _pct(prev["metrics"].get("accuracy"))), name])
    if "seed_packed" in m and "ours_stock" in m:
        rows.append([f"Sentiment latency, median, one change at a time ({n})",
                     _f(m["ours_stock"]["latency_ms"]["median"], "{:.0f} ms") + " (ours, stock layout)",
                     _f(m["seed_packed"]["latency_ms"]["median"], "{:.0f} ms") + " (seed, packed layout)", "",
                     "prompt cache + label rows alone: " + _f(variants.get("seed_packed"), "{:.2f}×") +
                     "; packed layout alone: " + _f(variants.get("ours_stock"), "{:.2f}×") +
                     " (each against ours as shipped)", name])
    if not random:
        mo = ours["metrics"] if ours else {}
        ms = seed["metrics"] if seed else {}
        rows.append([f"Accuracy, raw labels ({n})", _pct(mo.get("accuracy")), _pct(ms.get("accuracy")), "100%",
                     f"seed unparsed: {ms.get('unparsed', '—')}", name])
        pair = paired_comparison(r)
        if pair:
            rows.append([f"Paired, same items ({n}): right by one method only", str(pair["ours_only"]),
                         str(pair["seed_only"]), "",
                         f"both right {pair['both']}, both wrong {pair['neither']}; exact McNemar p = {pair['p']:.2f}", name])
        for label, en in ((POS, "positive"), (NEG, "negative")):
            rows.append([f"F1 {label} ({en})", _f(mo.get("per_class", {}).get(label, {}).get("f1"), "{:.3f}"),
                         _f(ms.get("per_class", {}).get(label, {}).get("f1"), "{:.3f}"), "1.000", "", name])
        cal = ours.get("calibration") if ours else None
        if cal:
            rows.append([f"Confidence calibration error, ECE over 10 bins ({n})", _f(cal.get("ece"), "{:.3f}"), "— (no confidence)",
                         "0", "bins of the label's confidence over [0.5, 1]", name])
        unc = ours.get("uncertain") if ours else None
        if unc and unc.get("share") is not None:
            by = unc.get("flagged_by_verdict", {})
            read = ", ".join(f"{v['flagged']} of {v['of']} {k}" for k, v in sorted(by.items()))
            rows.append([f"Flagged uncertain ({n})", _pct(unc["share"]), "—", "",
                         f"accuracy flagged {_pct(unc.get('accuracy_flagged'))}, not flagged {_pct(unc.get('accuracy_not_flagged'))}"
                         + (f"; hand-read items flagged: {read}" if read else ""), name])
        errors = {g: sum(v for p, v in row.items() if p != g) for g, row in mo.get("confusion", {}).items()}
        errors_seed = {g: sum(v for p, v in row.items() if p != g) for g, row in ms.get("confusion", {}).items()}
        if errors:
            rows.append([f"Errors by gold label ({n}): 正面 read as 负面 / 负面 read as 正面",
                         f"{errors.get(POS, 0)} / {errors.get(NEG, 0)}",
                         f"{errors_seed.get(POS, 0)} / {errors_seed.get(NEG, 0)}" if errors_seed else "—", "0 / 0",
                         "seed unparsed counted as errors", name])
        rv = r.get("reviewed")
        if rv and rv.get("agree_n"):
            rows.append([f"Accuracy on hand-read items whose label I agree with ({rv['agree_n']} of {rv['items_read']} read)",
                         _pct(rv["agree"].get("ours", {}).get("accuracy")), _pct(rv["agree"].get("seed", {}).get("accuracy")),
                         "100%", "same items, raw: ours " + _pct(rv["raw_on_read_items"].get("ours")) + ", seed " +
                         _pct(rv["raw_on_read_items"].get("seed")), name])
    return rows


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against a fair coin."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_comparison(r: dict[str, Any]) -> dict[str, Any] | None:
    """Items that only ours / only the seed got right, and whether that difference is more than chance."""
    items = [x for x in r.get("items", []) if "ours" in x and "seed" in x]
    if not items:
        return None
    ours = [x["ours"]["label"] == x["gold"] for x in items]
    seed = [x["seed"]["label"] == x["gold"] for x in items]
    b = sum(o and not s for o, s in zip(ours, seed))
    c = sum(s and not o for o, s in zip(ours, seed))
    both = sum(o and s for o, s in zip(ours, seed))
    return {"ours_only": b, "seed_only": c, "both": both, "neither": len(items) - b - c - both,
            "p": mcnemar_exact_p(b, c)}


def _chat_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    rows = []
    for t in r["by_turns"]:
        c = t["ceiling"]
        rows.append([f"Chat TTFT, {t['turns']} turn(s) of history ({t['prompt_tokens']} prompt tokens)",
                     _f(t["ttft_ms"].get("median"), "{:.0f} ms"), _f(t["bare_prefill_ms"].get("median"), "{:.0f} ms (bare forward)"),
                     _f(c["ttft_floor_ms"], "{:.0f} ms"),
                     _f(t["ttft_ms"].get("median") / c["ttft_floor_ms"] if t["ttft_ms"].get("median") else None, "{:.2f}× floor"), name])
        rows.append([f"Chat decode, {t['turns']} turn(s)", _f(t["decode_tps"].get("median"), "{:.2f} tok/s"),
                     _f(t["bare_decode_tps"].get("median"), "{:.2f} tok/s (bare loop)"), _f(c["decode_tps"], "{:.2f} tok/s"),
                     _pct(t.get("decode_fraction_of_ceiling")) + " of ceiling (bare " + _pct(t.get("bare_fraction_of_ceiling")) + ")"
                     + (f"; at the best GEMV kernel's rate ({c['gemv_gbs']:.1f} GB/s) the ceiling is {c['decode_tps_at_gemv_rate']:.2f} tok/s"
                        if c.get("decode_tps_at_gemv_rate") else ""), name])
    conversation = r.get("conversation")
    if conversation and conversation.get("reuse") and conversation.get("fresh"):
        reuse, fresh = conversation["reuse"], conversation["fresh"]
        last, first = reuse[-1], reuse[0]
        rows.append([f"Chat TTFT, turn {last['turn']} of one conversation ({last['prompt_tokens']} prompt tokens; "
                     f"{last['reused_tokens']} already read): conversation KV reuse vs none",
                     _f(last["first_token_ms"], "{:.0f} ms"), _f(fresh[-1]["first_token_ms"], "{:.0f} ms (no reuse)"),
                     "", f"turn {last['turn']} / turn 1: {last['first_token_ms'] / first['first_token_ms']:.2f}× with reuse, "
                         f"{fresh[-1]['first_token_ms'] / fresh[0]['first_token_ms']:.2f}× without", name])
    return rows


def _kv_append_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in r["by_context"]:
        growing, dynamic = c["step_ms"]["GrowingCache"], c["step_ms"]["DynamicCache"]
        rows.append([f"Chat decode step at a {c['context']}-token context ({c['kv_mb_at_context']:.0f} MB of KV): "
                     f"appended in place (GrowingCache) vs torch.cat per token (DynamicCache)",
                     _f(growing["median"], "{:.1f} ms"), _f(dynamic["median"], "{:.1f} ms (DynamicCache)"), "",
                     f"{c['growing_speedup']:.2f}× as fast; median of {growing['n']} steps each, taking turns; "
                     f"logits {'equal' if c['same_logits'] else 'DIFFER'}", name])
    return rows


_PACKING_WORK = (("label_ms", "a label (classify: a review's rows)"), ("decode_step_ms", "a chat decode step (1 row)"),
                 ("prefill_ms", "a chat prefill"))


def _chosen_path(r: dict[str, Any]) -> str:
    """The linear path the app chose, without the probe's figures: "torch F.linear" or "oneDNN packed FP32"."""
    return r["app_linear_path"].split(" (")[0]


def _model_label(r: dict[str, Any]) -> str:
    """ "qwen1.5-0.5b shape" for random weights of a named shape, else "stand-in"."""
    model = r.get("provenance", {}).get("model") or {}
    return f"{model['shape']} shape" if model.get("kind") == "random" else "stand-in"


def _packing_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key, what in _PACKING_WORK:
        packed, dense = r["median_ms"]["packed"][key], r["median_ms"]["F.linear"][key]
        size = f" of {r['prefill_tokens']} tokens" if key == "prefill_ms" else ""
        rows.append([f"oneDNN-packed weights vs torch's F.linear, whole engine: {what}{size}", f"{packed:.1f} ms",
                     f"{dense:.1f} ms (F.linear)", "", f"packed {r['packed_speedup'][key]:.2f}× as fast; taking turns, "
                     f"median of {len(r['times']['packed'][key])}", name])
    chosen = _chosen_path(r)
    rows.append([f"Packing weighed with {r['one_row_share']:.0%} of the time decoding (the start-up rule)",
                 f"{r['weighted_packed_speedup']:.2f}×", "", f"{r['min_gain']:.2f}× to pack", f"the app chose here: {chosen}", name])
    return rows


def _startup_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    wb = r["weight_bytes_fp32"]
    return [
        ["Start-up: process start → /healthz OK", _f(r["ready_s"].get("median"), "{:.1f} s"), "—",
         _f(r.get("limit", {}).get("ready_s"), "{:.1f} s (imports + one read of the weights)"),
         _f(r["ready_s"].get("median") / r["limit"]["ready_s"] if r.get("limit") else None, "{:.2f}× limit") +
         f"; {r['ready_s'].get('n')} start-ups; errors {r['errors']}", name],
        ["Peak RSS while loading", _gib(r["peak_rss_loading"]), "—", _gib(wb) + " (FP32 weights)",
         _f(r.get("peak_loading_over_weights"), "{:.2f}× weights"), name],
        [("Peak RSS while serving the largest requests the limits admit (1024-token text; chat at the "
          "2048-token history budget)" if r.get("worst_case") else "Peak RSS while serving"),
         _gib(r["peak_rss_serving"]), "—", _gib(wb), _f(r.get("peak_serving_over_weights"), "{:.2f}× weights"), name],
    ]


def _concurrency_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    rows = []
    for lv in r["levels"]:
        lim = lv.get("limit", {})
        rows.append([f"/api/infer ({r['mode']}), {lv['clients']} client(s): throughput; p50 / p95; errors",
                     f"{_f(lv['throughput_rps'], '{:.2f} req/s')}; {_f(lv['p50_ms'], '{:.0f}')} / {_f(lv['p95_ms'], '{:.0f} ms')}; {lv['errors']} errors",
                     "—", f"{_f(lim.get('throughput_rps'), '{:.2f} req/s')}; p50 ≈ {_f(lim.get('p50_ms'), '{:.0f} ms')}; 0 errors",
                     _f(lv.get("throughput_vs_single"), "{:.2f}× single-client throughput") + "; server model time median " +
                     _f(lv.get("server_model_ms", {}).get("median"), "{:.0f} ms"), name])
    return rows


def _injection_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    if "accuracy_meaningless" in r or "families" not in r:
        return []
    m = r["methods"]
    o, s = m.get("ours", {}), m.get("seed", {})
    fams = r["families"]
    count = lambda seen: sum(len(f["templates"]) for f in fams.values() if f["seen"] == seen)  # noqa: E731
    bases = len(r.get("bases", []))
    rows = [[f"Injection: label holds, all families ({bases} reviews × {count(True) + count(False)} attacks; "
             f"among reviews each method labels right when clean)", _pct(o.get("holds")), _pct(s.get("holds")), "100%",
             f"previous release: {_pct(m.get('previous', {}).get('holds'))}; "
             f"raw (label = review's label): ours {_pct(o.get('holds_raw'))}, seed {_pct(s.get('holds_raw'))}; "
             f"clean accuracy on these reviews: ours {_pct(o.get('clean_accuracy'))}, seed {_pct(s.get('clean_accuracy'))}", name],
            [f"Injection: seen families ({count(True)} attacks the design was chosen against, on dev items)",
             _pct(o.get("holds_seen")), _pct(s.get("holds_seen")), "100%",
             f"pushing to 负面 / 正面: ours {_pct(o.get('holds_by_class', {}).get(POS))} / {_pct(o.get('holds_by_class', {}).get(NEG))}", name],
            [f"Injection: unseen families ({count(False)} attacks never run while choosing)",
             _pct(o.get("holds_unseen")), _pct(s.get("holds_unseen")), "100%", "", name]]
    for family, info in fams.items():
        rows.append([f"Injection family: {family} ({'seen' if info['seen'] else 'unseen'})",
                     _pct(o.get("holds_by_family", {}).get(family)), _pct(s.get("holds_by_family", {}).get(family)),
                     "100%", " · ".join(t for _, t in info["templates"]).replace("\n", "⏎").replace("|", "¦"), name])
    return rows


def _md(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table; a '|' inside a cell becomes '/'."""
    def cells(row: list[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "/") for c in row) + " |"
    return [cells(header), "|" + "---|" * len(header)] + [cells(row) for row in rows]


def _sentiment_floor_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    """What the sentiment floor rests on: the matmul rate it assumes, the rate at a review's size, the profile."""
    if not (r.get("floor") and r.get("limits") and r.get("cost") and r["methods"].get("ours")):
        return []
    f, cost = r["floor"], r["cost"]
    tokens = r["methods"]["ours"]["tokens"]["median"]
    by_tokens = r["limits"]["matmul"]["by_tokens"]
    at = min(by_tokens, key=lambda x: abs(x["tokens"] - tokens))
    peak = max(by_tokens, key=lambda x: x["best_gflops"])
    prof = r.get("profile_ours")
    k = prof["share_by_kind"] if prof else {}
    return [[name, _f(f["ours_over_floor"]["median"], "{:.2f}×"),
             f"{f['peak_gflops']:.0f} GFLOP/s ({peak.get('kernel', 'F.linear')}, T={peak['tokens']})",
             f"{tokens:.0f}", f"{at['best_gflops']:.0f} GFLOP/s (T={at['tokens']})",
             _f(f["floor_at_size_ms"]["median"], "{:.0f} ms"),
             f"{(cost['decode_weight_bytes'] - 4 * cost['vocab'] * cost['hidden']) / 1e9:.2f} GB",
             _f(f.get("weight_read_ms"), "{:.0f} ms"),
             (" / ".join(f"{k[x]:.0%}" for x in ("linear", "attention", "elementwise", "other")) + f" ({prof['texts']})")
             if prof else "—"]]


SENTIMENT_FLOOR_HEADER = [
    "Source", "Ours / FLOP floor, median", "Peak matmul rate the floor assumes (kernel, rows T)",
    "Tokens per review, median", "Same matmul at the nearest measured T", "FLOP floor at the review's size, median",
    "Weights read per review (all but embedding and lm_head)", "One read of them at the best measured bandwidth",
    "Profile of classify: linear / attention / element-wise / other CPU time (reviews)"]


def _chat_decode_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    """Decode speed as bytes moved per second, against the measured read bandwidth and the batch-1 kernel's rate."""
    rows = []
    for t in r["by_turns"]:
        c = t["ceiling"]
        tps, bare = t["decode_tps"].get("median"), t["bare_decode_tps"].get("median")
        if not tps:
            continue
        rows.append([name, t["turns"], f"{c['bytes_per_token'] / 1e9:.2f} GB", f"{tps:.2f} tok/s → {tps * c['bytes_per_token'] / 1e9:.1f} GB/s",
                     _f(c.get("bandwidth_gbs"), "{:.1f} GB/s"),
                     f"{c.get('gemv_kernel') or 'F.linear'}: {c['gemv_gbs']:.1f} GB/s" if c.get("gemv_gbs") else "—",
                     _f(bare, "{:.2f} tok/s"), f"{max(0.0, 1 - tps / (bare or tps)):.0%}"])
    return rows


CHAT_DECODE_HEADER = [
    "Source", "Turns", "Bytes read per token (weights + KV)", "Ours: decode rate → bytes moved",
    "Best measured read bandwidth (long sequential sum)", "Fastest batch-1 linear kernel's weight rate",
    "Bare forward loop", "Ours slower than the bare loop by"]


def _startup_detail_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    lim = r.get("limit")
    if not lim:
        return []
    ready = r["ready_s"]["median"]
    return [[name, f"{ready:.1f} s", f"{lim['ready_s']:.1f} s", f"{lim['import_s']:.1f} s", f"{lim['read_weights_s']:.1f} s",
             f"{ready - lim['ready_s']:.1f} s"]]


STARTUP_HEADER = ["Source", "Start-up, median", "Limit", "of which: imports", "of which: one read of the weights",
                  "Start-up − limit (not broken down)"]


def _confusion_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    if "accuracy_meaningless" in r:
        return []
    rows = []
    for m in ("ours", "seed"):
        if m not in r["methods"]:
            continue
        c = r["methods"][m]["metrics"]["confusion"]
        rows += [[name, m, gold, c[gold][POS], c[gold][NEG], c[gold]["unparsed"]] for gold in (POS, NEG)]
    return rows


def _batch_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    rates = r["reviews_per_s"]
    rows = [[f"Sentiment throughput, {r['n']} held-out reviews ({isa(r)}): classify_many vs one-by-one classify",
             f"{rates['classify_many']:.2f} reviews/s", f"{rates['one_by_one']:.2f} reviews/s (one-by-one)",
             f"{r['flop_floor_reviews_per_s']:.2f} reviews/s (FLOP limit)",
             f"{r['share_of_flop_floor']:.0%} of the FLOP limit; {r['speedup_vs_one_by_one']:.2f}× one-by-one; "
             f"same label on {r['same_labels']} of {r['n']}", name]]
    if "seed" in rates:
        rows.append([f"Sentiment throughput ({isa(r)}): classify_many vs the seed's generate-and-parse "
                     f"(seed on {r['seed_n']} of them)", f"{rates['classify_many']:.2f} reviews/s",
                     f"{rates['seed']:.2f} reviews/s", "", f"{r['speedup_vs_seed']:.1f}× the seed", name])
    wait = r.get("chat_wait")
    if wait:
        rows.append([f"Chat first token while a {r['n']}-review batch runs ({isa(r)})",
                     f"{wait['first_token_ms_during_batch']:.0f} ms",
                     f"{wait['first_token_ms_alone']['median']:.0f} ms (no batch)",
                     f"{wait['slice_ms']['max']:.0f} ms (the longest slice)",
                     f"slices: median {wait['slice_ms']['median']:.0f} ms, {wait['slices']} slices", name])
    return rows


CONFUSION_HEADER = ["Source", "Method", "Gold label", "→ 正面", "→ 负面", "→ unparsed"]


def _run_rows(name: str, r: dict[str, Any]) -> list[list[str]]:
    prov = r.get("provenance", {})
    share = (r.get("cpu_share") or {}).get("others")
    return [[name, (prov.get("git_head") or "?")[:10], (prov.get("prompts_commit") or "?")[:10],
             "—" if share is None else f"{share:.0%}"]]


RUN_HEADER = ["Source", "Commit", "Prompts commit", "CPU used by other processes during the run"]

MAIN_HEADER = ["Figure", "Ours", "Seed method (chat rows: bare forward loop)", "Limit", "Ours vs limit", "Source"]
_ROWS = {"sentiment": _sentiment_rows, "chat": _chat_rows, "kv_append": _kv_append_rows, "packing": _packing_rows,
         "startup": _startup_rows,
         "concurrency": _concurrency_rows, "injection": _injection_rows, "batch": _batch_rows}
_ORDER = {"sentiment": 0, "injection": 1, "batch": 2, "chat": 3, "kv_append": 4, "packing": 5, "startup": 6,
          "concurrency": 7}
# The tables under each model's main table: (heading, the bench whose files feed it or None for all, header, rows).
DETAIL_TABLES = (
    ("Sentiment floor: what it assumes", "sentiment", SENTIMENT_FLOOR_HEADER, _sentiment_floor_rows),
    ("Sentiment confusion matrices", "sentiment", CONFUSION_HEADER, _confusion_rows),
    ("Chat decode: bytes moved per second", "chat", CHAT_DECODE_HEADER, _chat_decode_rows),
    ("Start-up time against its limit", "startup", STARTUP_HEADER, _startup_detail_rows),
    ("Runs", None, RUN_HEADER, _run_rows),
)


def _by_model(results: list[tuple[Path, dict[str, Any]]]) -> list[tuple[str, str, list[tuple[Path, dict[str, Any]]]]]:
    """(tag, kind, result files in table order), real weights first."""
    by_model: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path, r in results:
        by_model.setdefault(_tag(r), []).append((path, r))
    out = []
    for tag in sorted(by_model, key=lambda t: (t.endswith("random"), t)):
        items = by_model[tag]
        model = (items[0][1].get("provenance", {}).get("model") or {})
        kind = "real weights" if model.get("kind") == "real" else "random weights, exact config: cost only"
        items = sorted(items, key=lambda pr: (_ORDER.get(pr[1].get("bench"), 9), -pr[1].get("split", {}).get("heldout_n", 0)))
        out.append((tag, kind, items))
    return out


def _main_rows(items: list[tuple[Path, dict[str, Any]]]) -> list[list[str]]:
    rows = []
    for path, r in items:
        rows += _ROWS.get(r.get("bench"), lambda *_: [])(path.name, r)
    return rows


def table(results: list[tuple[Path, dict[str, Any]]]) -> str:
    out = []
    for tag, kind, items in _by_model(results):
        out += [f"### {tag} ({kind})", ""]
        out += _md(MAIN_HEADER, _main_rows(items))
        for heading, bench, header, make in DETAIL_TABLES:
            rows = [row for path, r in items if bench in (None, r.get("bench")) for row in make(path.name, r)]
            if rows:
                out += ["", f"#### {heading}, {tag}", ""] + _md(header, rows)
        out.append("")
    return "\n".join(out) if out else "(no results yet)"


DESIGN_START, DESIGN_END = "<!-- bench:design:start -->", "<!-- bench:design:end -->"


def design_table(path: Path) -> str:
    """The sentiment layouts measured on the dev split (bench/prompt_robust.py), best holds first, and what was fitted."""
    if not path.is_file():
        return "(no design search results yet)"
    d = json.loads(path.read_text(encoding="utf-8"))
    attacks = len(d["attack_items"]) // d["bases"]
    header = ["Layout", f"Accuracy, calibrated ({d['n']} dev reviews)",
              f"Holds, seen families ({d['bases']} short dev reviews × {attacks} attacks; among those the layout labels right when clean)",
              f"Weakest family (raw: all {d['bases']} reviews)", "Suffix tokens", "Prefix tokens", "ms per review"]
    rows = []
    ranked = sorted(d["variants"].items(), key=lambda kv: -(kv[1].get("holds_given_clean_correct") or kv[1].get("holds_calibrated") or 0))
    for name, v in ranked:
        fams = v.get("holds_by_family", {})
        weakest = min(fams.items(), key=lambda kv: kv[1]) if fams else ("—", None)
        rows.append([name, _pct(v["accuracy_calibrated"]), _pct(v.get("holds_given_clean_correct")),
                     f"{weakest[0]} {_pct(weakest[1])}", v["suffix_tokens"], v["prefix_tokens"], f"{v['ms_per_clean_item']:.0f}"])
    lines = _md(header, rows)
    fitted = []
    for name, v in d["variants"].items():
        if "fit" not in v:
            continue
        f, u = v["fit"], v["fit"]["uncertain"]
        fitted.append([f"`{name}`", f"{f['ece_t1']:.3f}", f"{f['best_temperature']}", f"{f['ece_best']:.3f}", u["threshold"],
                       _pct(u["flagged_share_dev"]), _pct(u["mixed_share_read"]) + f" (of {u['read']})",
                       ", ".join(f"{u['flagged_by_verdict'][k]} of {u['read_by_verdict'][k]} {k}" for k in u["read_by_verdict"]),
                       f"{_pct(u['precision_mixed'])} / {_pct(u['recall_mixed'])}",
                       f"{u['f1_best']['threshold']}: flags {_pct(u['f1_best']['flagged_share_dev'])}"])
    if fitted:
        lines += ["", "#### Fitted on dev", ""] + _md(
            ["Layout", "ECE at temperature 1", "NLL-best temperature", "ECE there", "Uncertain threshold",
             "Dev reviews flagged", "Mixed among the hand-read dev reviews", "Hand-read dev reviews flagged",
             "Precision / recall for mixed", "F1-best threshold"], fitted)
    return "\n".join(lines)


# -- plots ----------------------------------------------------------------------------------------

def plots(results: list[tuple[Path, dict[str, Any]]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []

    def save(fig, name):
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    by = {}
    for path, r in results:
        by.setdefault((r.get("bench"), _tag(r)), []).append((path, r))
    for (bench, tag), items in sorted(by.items()):
        if bench == "sentiment":
            path, r = max(items, key=lambda pr: pr[1]["split"]["items_run"])
            fig, ax = plt.subplots(figsize=(7, 4))
            ours = [it["ours"]["ms"] for it in r["items"] if "ours" in it]
            seed = [it["seed"]["ms"] for it in r["items"] if "seed" in it]
            floor = [it["ours"]["floor_ms"] for it in r["items"] if "floor_ms" in it.get("ours", {})]
            data, labels = [], []
            for xs, lab in ((floor, "floor (FLOPs / peak matmul)"), (ours, "ours: classify"), (seed, "seed: generate(5)")):
                if xs:
                    data.append(xs)
                    labels.append(lab)
            ax.boxplot(data, orientation="horizontal", whis=(5, 95), showfliers=True, flierprops={"markersize": 2})
            ax.set_yticks(range(1, len(labels) + 1), labels)
            ax.set_xscale("log")
            ax.set_xlabel("ms per review (log scale); whiskers p5-p95")
            ax.set_title(f"Sentiment latency, {len(ours)} held-out reviews, {tag}")
            save(fig, f"sentiment-latency-{tag}.png")
            if "accuracy_meaningless" not in r:
                _accuracy_plot(plt, save, r, by.get(("injection", tag)), tag)
        elif bench == "chat":
            path, r = items[-1]
            rows = r["by_turns"]
            fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
            xs = list(range(len(rows)))
            w = 0.2
            a1.bar([x - 1.5 * w for x in xs], [t["decode_tps"].get("median") or 0 for t in rows], w, label="ours (engine.chat)")
            a1.bar([x - 0.5 * w for x in xs], [t["bare_decode_tps"].get("median") or 0 for t in rows], w, label="bare forward loop")
            if all(t["ceiling"].get("decode_tps_at_gemv_rate") for t in rows):
                a1.bar([x + 0.5 * w for x in xs], [t["ceiling"]["decode_tps_at_gemv_rate"] for t in rows], w,
                       label="ceiling at the best GEMV kernel's rate")
            a1.bar([x + 1.5 * w for x in xs], [t["ceiling"]["decode_tps"] for t in rows], w, label="ceiling: bandwidth / bytes")
            a1.set_xticks(xs, [f"{t['turns']} turns\n{t['prompt_tokens']} tok" for t in rows])
            a1.set_ylabel("decode tokens/s")
            a1.legend(fontsize=8)
            a1.set_title("Decode speed vs ceiling")
            a2.bar([x - w / 2 for x in xs], [t["ttft_ms"].get("median") or 0 for t in rows], w, label="ours: time to first token")
            a2.bar([x + w / 2 for x in xs], [t["ceiling"]["ttft_floor_ms"] for t in rows], w, label="floor: FLOPs / peak matmul")
            a2.set_xticks(xs, [f"{t['turns']} turns" for t in rows])
            a2.set_ylabel("ms")
            a2.legend(fontsize=8)
            a2.set_title("Time to first token vs floor")
            fig.suptitle(f"Chat, {tag}")
            save(fig, f"chat-{tag}.png")
        elif bench == "concurrency":
            for path, r in items:
                lv = r["levels"]
                fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
                cs = [x["clients"] for x in lv]
                a1.plot(cs, [x["throughput_rps"] or 0 for x in lv], "o-", label="measured")
                if lv and lv[0].get("limit"):
                    a1.axhline(lv[0]["limit"]["throughput_rps"], ls="--", c="gray", label="single-client (limit)")
                a1.set_ylim(bottom=0)
                a1.set_xlabel("concurrent clients")
                a1.set_ylabel("requests/s")
                a1.legend(fontsize=8)
                a2.plot(cs, [x["p50_ms"] or 0 for x in lv], "o-", label="p50")
                a2.plot(cs, [x["p95_ms"] or 0 for x in lv], "s-", label="p95")
                if lv and lv[0].get("limit"):
                    a2.plot(cs, [x["limit"]["p50_ms"] for x in lv], "--", c="gray", label="c × single p50")
                a2.set_xlabel("concurrent clients")
                a2.set_ylabel("ms")
                a2.legend(fontsize=8)
                fig.suptitle(f"/api/infer ({r['mode']}), {tag}; errors: {r['errors']}")
                save(fig, f"concurrency-{r['mode']}-{tag}.png")
        elif bench == "startup":
            path, r = items[-1]
            fig, ax = plt.subplots(figsize=(7, 3.6))
            for i, run in enumerate(r["runs"]):
                tl = run["timeline"]
                ax.plot([t for t, _ in tl], [b / 2**30 for _, b in tl], label=f"start-up {i + 1}")
                ax.axvline(run["ready_s"], ls=":", c=f"C{i}")
            ax.axhline(r["weight_bytes_fp32"] / 2**30, ls="--", c="gray", label="FP32 weight bytes")
            ax.set_xlabel("s since process start (dotted: /healthz OK)")
            ax.set_ylabel("RSS, GiB")
            ax.legend(fontsize=8)
            ax.set_title(f"Start-up memory, {tag}")
            save(fig, f"startup-rss-{tag}.png")
    return made


def _accuracy_plot(plt, save, r, injection, tag):
    groups, ours, seed = [], [], []
    m = r["methods"]
    groups.append(f"accuracy\n(raw, n={r['split']['items_run']})")
    ours.append(m["ours"]["metrics"]["accuracy"])
    seed.append(m.get("seed", {}).get("metrics", {}).get("accuracy") or 0)
    for label, en in ((POS, "pos"), (NEG, "neg")):
        groups.append(f"F1 {en}")
        ours.append(m["ours"]["metrics"]["per_class"][label]["f1"])
        seed.append(m.get("seed", {}).get("metrics", {}).get("per_class", {}).get(label, {}).get("f1") or 0)
    rv = r.get("reviewed")
    if rv and rv.get("agree_n"):
        groups.append(f"accuracy\n(agreed, n={rv['agree_n']})")
        ours.append(rv["agree"]["ours"]["accuracy"])
        seed.append(rv["agree"].get("seed", {}).get("accuracy") or 0)
    if injection:
        inj = injection[-1][1]["methods"]
        groups.append("injection\nlabel holds")
        ours.append(inj.get("ours", {}).get("holds") or 0)
        seed.append(inj.get("seed", {}).get("holds") or 0)
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = list(range(len(groups)))
    w = 0.38
    b1 = ax.bar([x - w / 2 for x in xs], ours, w, label="ours: classify")
    b2 = ax.bar([x + w / 2 for x in xs], seed, w, label="seed: generate(5)")
    for bars in (b1, b2):
        for b in bars:
            ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.01, f"{b.get_height():.2f}", ha="center", fontsize=7)
    ax.set_xticks(xs, groups, fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"Sentiment quality, {tag}")
    save(fig, f"accuracy-{tag}.png")


# The headline rows the project's README shows (the full table stays in bench/README.md).
SUMMARY_START, SUMMARY_END = "<!-- bench:summary:start -->", "<!-- bench:summary:end -->"
SUMMARY_ROWS = ("Sentiment latency, median (200", "Sentiment latency, median (1000): this layout",
                "Flagged uncertain (1000)", "Accuracy, raw labels (200)", "Accuracy, raw labels (1000)",
                "Paired, same items (1000)",
                "Accuracy on hand-read", "Confidence calibration error", "Injection: label holds, all",
                "Injection: seen", "Injection: unseen", "Chat TTFT, 1 turn", "Chat decode, 1 turn", "Start-up",
                "Peak RSS while loading", "Peak RSS while serving", "/api/infer (emotion), 8 client")


def summary(results: list[tuple[Path, dict[str, Any]]]) -> str:
    """The real-weights rows of the main table that the project's README shows, one of each kind, in table order,
    then the speed figures for AVX-512 and AVX2 side by side."""
    lines: list[str] = []
    seen: set[str] = set()
    for tag, kind, items in _by_model(results):
        if kind != "real weights" or seen:
            continue
        picked = []
        for row in _main_rows(items):
            key = next((k for k in SUMMARY_ROWS if row[0].startswith(k)), None)
            if key and key not in seen:
                seen.add(key)
                picked.append(row)
        lines += [f"Measured here on {tag} ({kind}):", ""] + _md(MAIN_HEADER, picked)
    by_isa = isa_table(results)
    return "\n".join(lines + (["", by_isa] if by_isa else []))


def isa(r: dict[str, Any]) -> str:
    """The instruction set a result ran with: AVX2 when capped (or the CPU has no AVX-512), else AVX-512."""
    prov = r.get("provenance", {})
    if (prov.get("isa_caps") or {}).get("ATEN_CPU_CAPABILITY", "").lower() == "avx2":
        return "AVX2"
    return "AVX-512" if "avx512f" in (prov.get("cpu_isa_flags") or []) else "AVX2"


def _isa_figures(bench: str, r: dict[str, Any]) -> list[tuple[str, str]]:
    """(figure, value) pairs of one result for the per-instruction-set table."""
    if bench == "chat":
        first = r["by_turns"][0]
        out = [("Chat decode, 1 turn: tok/s (share of the bandwidth ceiling)",
                f"{first['decode_tps']['median']:.2f} ({first['decode_fraction_of_ceiling']:.0%})")]
        conv = r.get("conversation") or {}
        if conv.get("reuse") and conv.get("fresh"):
            reuse, fresh = conv["reuse"], conv["fresh"]
            out.append((f"Chat TTFT at turn {reuse[-1]['turn']} of one conversation: KV reuse / none (turn {reuse[-1]['turn']} ÷ turn 1 with reuse)",
                        f"{reuse[-1]['first_token_ms']:.0f} / {fresh[-1]['first_token_ms']:.0f} ms "
                        f"({reuse[-1]['first_token_ms'] / reuse[0]['first_token_ms']:.2f}×)"))
        return out
    if bench == "batch":
        rates = r["reviews_per_s"]
        out = [(f"Sentiment of {r['n']} held-out reviews: reviews/s, classify_many / one-by-one"
                + (" / seed" if "seed" in rates else ""),
                " / ".join(f"{rates[k]:.2f}" for k in ("classify_many", "one_by_one", "seed") if k in rates)
                + f" ({r['speedup_vs_one_by_one']:.2f}× one-by-one"
                + (f", {r['speedup_vs_seed']:.1f}× seed" if "speedup_vs_seed" in r else "") + ")")]
        wait = r.get("chat_wait")
        if wait:
            out.append(("A chat's first token while a batch runs (batch slice median / max)",
                        f"{wait['first_token_ms_during_batch']:.0f} ms ({wait['slice_ms']['median']:.0f} / "
                        f"{wait['slice_ms']['max']:.0f} ms)"))
        return out
    if bench == "kv_append":
        longest = r["by_context"][-1]
        return [(f"Decode step at a {longest['context']}-token context, {_model_label(r)}: KV appended in place / torch.cat per token",
                 f"{longest['step_ms']['GrowingCache']['median']:.0f} / {longest['step_ms']['DynamicCache']['median']:.0f} ms "
                 f"({longest['growing_speedup']:.2f}×)")]
    if bench == "packing":
        x = r["packed_speedup"]
        return [(f"oneDNN-packed weights vs F.linear, {_model_label(r)}: speed-up of a label / a decode step / a prefill; the app's choice",
                 f"{x['label_ms']:.2f}× / {x['decode_step_ms']:.2f}× / {x['prefill_ms']:.2f}×; "
                 f"{_chosen_path(r)}")]
    if bench == "startup" and not r.get("worst_case"):
        ready, limit = r["ready_s"]["median"], r.get("limit", {}).get("ready_s")
        return [("Start-up to /healthz (× imports + one read of the weights)",
                 f"{ready:.1f} s" + (f" ({ready / limit:.2f}×)" if limit else ""))]
    return []


def isa_table(results: list[tuple[Path, dict[str, Any]]]) -> str:
    """Speed figures of real-weights results side by side for AVX-512 and AVX2 (the newest of each)."""
    newest: dict[tuple[str, str], tuple[Path, dict[str, Any]]] = {}
    for path, r in results:
        model = r.get("provenance", {}).get("model") or {}
        # Real weights; and the KV append comparison on the product's shape too (random weights cost the same).
        if r.get("bench") not in ("chat", "batch", "startup", "kv_append", "packing") or (
                model.get("kind") != "real" and r.get("bench") not in ("kv_append", "packing")):
            continue
        key = (r["bench"], model.get("shape") or "", isa(r))
        when = r.get("provenance", {}).get("when", "")
        if key not in newest or when > newest[key][1].get("provenance", {}).get("when", ""):
            newest[key] = (path, r)
    rows: dict[str, dict[str, str]] = {}
    sources: dict[str, list[str]] = {}
    for (bench, _, name), (path, r) in sorted(newest.items()):
        for figure, value in _isa_figures(bench, r):
            rows.setdefault(figure, {})[name] = value
            sources.setdefault(figure, []).append(path.name)
    if not rows:
        return ""
    table_rows = [[figure, by.get("AVX-512", "—"), by.get("AVX2", "—"), ", ".join(sources[figure])]
                  for figure, by in rows.items()]
    return "\n".join(_md(["Figure (speed by instruction set)", "AVX-512",
                           "AVX2 only (oneDNN, MKL, ATen capped: most laptops and small VMs)", "Source"], table_rows))


def write_readme(readme: Path, text: str, start: str = START, end: str = END) -> None:
    body = readme.read_text(encoding="utf-8") if readme.is_file() else f"# Benchmarks\n\n{start}\n{end}\n"
    if start not in body or end not in body:
        body = body.rstrip() + f"\n\n{start}\n{end}\n"
    new = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: f"{start}\n{text}\n{end}", body, flags=re.S)
    readme.write_text(new, encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS_DIR)
    p.add_argument("--readme", type=Path, default=BENCH_DIR / "README.md")
    p.add_argument("--project-readme", type=Path, default=BENCH_DIR.parent / "README.md",
                   help="the README whose summary block gets the headline rows")
    p.add_argument("--stdout", action="store_true", help="print the table instead of writing the README")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args()
    results = load_results(args.results)
    text = table(results)
    if args.stdout:
        print(text)
    else:
        write_readme(args.readme, text)
        write_readme(args.readme, design_table(args.results / "prompt_robust.json"), DESIGN_START, DESIGN_END)
        print(f"updated {args.readme}")
        if args.project_readme.is_file() and SUMMARY_START in args.project_readme.read_text(encoding="utf-8"):
            write_readme(args.project_readme, summary(results), SUMMARY_START, SUMMARY_END)
            print(f"updated {args.project_readme}")
    if not args.no_plots:
        for path in plots(results, args.results):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
