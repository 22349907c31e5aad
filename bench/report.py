"""The results table (into bench/README.md, between markers) and the plots, from bench/results/*.json.

    python -m bench.report [--results bench/results] [--readme bench/README.md] [--stdout]

Nothing here is typed by hand: every number in the table is read from a result file, and the file
it came from is named under the table.
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
BENCHES = ("sentiment", "injection", "chat", "startup", "concurrency")
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


def _confusion_md(r: dict[str, Any]) -> str:
    lines = []
    for m in ("ours", "seed"):
        if m not in r["methods"]:
            continue
        c = r["methods"][m]["metrics"]["confusion"]
        lines.append(f"{m}: gold 正面 → 正面 {c[POS][POS]}, 负面 {c[POS][NEG]}, unparsed {c[POS]['unparsed']}; "
                     f"gold 负面 → 正面 {c[NEG][POS]}, 负面 {c[NEG][NEG]}, unparsed {c[NEG]['unparsed']}")
    return "; ".join(lines)


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


def shortfalls(r: dict[str, Any]) -> list[str]:
    """Where a figure falls short of its limit, and why, computed from the same result file."""
    b, out = r.get("bench"), []
    share = (r.get("cpu_share") or {}).get("others")
    busy = f"other processes used {share:.0%} of the CPU during this run" if share is not None else None
    if b == "sentiment" and r.get("floor") and r.get("limits") and r.get("cost") and r["methods"].get("ours"):
        f, lim = r["floor"], r["limits"]
        tokens = r["methods"]["ours"]["tokens"]["median"]
        rows = lim["matmul"]["by_tokens"]
        at = min(rows, key=lambda x: abs(x["tokens"] - tokens))
        peak_row = max(rows, key=lambda x: x["best_gflops"])
        text = (
            f"Sentiment: ours is {f['ours_over_floor']['median']:.1f}× its FLOP floor (median). The floor assumes the "
            f"peak matmul rate ({f['peak_gflops']:.0f} GFLOP/s, {peak_row.get('kernel', 'F.linear')}, reached at "
            f"T={peak_row['tokens']}); a review runs about {tokens:.0f} tokens, where "
            f"the same matmul reaches {at['best_gflops']:.0f} GFLOP/s (T={at['tokens']}): with few rows the kernel's "
            f"blocking and the split over the threads use the vector units less well, so at the review's size the floor is "
            f"{f['floor_at_size_ms']['median']:.0f} ms (and one pass over the "
            f"{(r['cost']['decode_weight_bytes'] - 4 * r['cost']['vocab'] * r['cost']['hidden']) / 1e9:.2f} GB of weights "
            f"it reads needs at least {f['weight_read_ms']:.0f} ms at the best measured bandwidth)")
        prof = r.get("profile_ours")
        if prof:
            k = prof["share_by_kind"]
            text += (f". A profile of classify over {prof['texts']} reviews puts {k['linear']:.0%} of its CPU time in the "
                     f"linear layers (smaller q/k/v/o shapes than the measured MLP one, so below that rate), "
                     f"{k['attention']:.0%} in attention over the cached prefix, {k['elementwise']:.0%} in element-wise "
                     f"ops (RMSNorm, rotary, SiLU, residuals) and {k['other']:.0%} elsewhere")
        out.append(text + (f"; {busy}." if busy else "."))
    if b == "chat":
        for t in r["by_turns"]:
            c = t["ceiling"]
            tps = t["decode_tps"].get("median")
            if not tps:
                continue
            achieved = tps * c["bytes_per_token"] / 1e9
            out.append(
                f"Chat, {t['turns']} turn(s): {tps:.2f} tok/s moves {achieved:.1f} GB/s of weights and KV against "
                f"{c['bandwidth_gbs']:.1f} GB/s measured at best (a long sequential sum). A decode step is 169 "
                f"matrix-vector products (7 per layer + lm_head)"
                + (f", and the fastest batch-1 linear kernel here ({c.get('gemv_kernel') or 'F.linear'}) streams weights "
                   f"at only {c['gemv_gbs']:.1f} GB/s at best, a ceiling of {c['decode_tps_at_gemv_rate']:.2f} tok/s"
                   if c.get("gemv_gbs") else "")
                + f"; plus per-op dispatch. The bare forward loop gets {t['bare_decode_tps'].get('median') or 0:.2f} tok/s, so generate(), "
                f"the streamer and the thread add {max(0.0, 1 - tps / (t['bare_decode_tps'].get('median') or tps)):.0%}"
                + (f"; {busy}." if busy else "."))
            break
    if b == "startup" and r.get("limit"):
        lim = r["limit"]
        out.append(
            f"Start-up: {r['ready_s']['median']:.1f} s against {lim['ready_s']:.1f} s (imports {lim['import_s']:.1f} s + reading "
            f"the weights {lim['read_weights_s']:.1f} s); the rest (building the model, packing its linear layers for "
            f"oneDNN, which reads and reorders every weight once, the sentiment prefix forward, the Gradio app's set-up) "
            f"is not broken down here. Memory: {r['peak_rss_loading'] / r['weight_bytes_fp32']:.2f}× "
            f"the weights while loading (the safetensors are memory-mapped and each dense weight's pages are dropped once "
            f"its packed copy is made; with tied embeddings the packed output head is a second copy of the embedding), "
            f"{r['peak_rss_serving'] / r['weight_bytes_fp32']:.2f}× while serving (Python, torch, Gradio, KV caches"
            + (", here with the largest requests the limits admit" if r.get("worst_case") else "") + ").")
    if b == "concurrency":
        lv = [x for x in r["levels"] if x.get("throughput_vs_single")]
        if len(lv) > 1:
            last = lv[-1]
            first = lv[0]
            m0, m1 = first["server_model_ms"].get("median") or 0, last["server_model_ms"].get("median") or 0
            text = (f"Concurrency ({r['mode']}): at {last['clients']} clients throughput is {last['throughput_vs_single']:.2f}× "
                    f"the single-client one, with {sum(x['errors'] for x in r['levels'])} errors; the server's own model "
                    f"time per request went from {m0:.0f} to {m1:.0f} ms")
            if m0 and m1 > 1.05 * m0:
                text += (". A plausible cause of the slower model time, not confirmed here: each request runs on a "
                         "different server worker thread, and each such thread gets its own OpenMP team (libgomp), "
                         "more threads than the 2 cores; the rest is hand-over between requests.")
            else:
                text += ": requests queue for the one model, as designed."
            out.append(text)
    return out


def table(results: list[tuple[Path, dict[str, Any]]]) -> str:
    by_model: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path, r in results:
        by_model.setdefault(_tag(r), []).append((path, r))
    out = []
    for tag in sorted(by_model, key=lambda t: (t.endswith("random"), t)):
        items = by_model[tag]
        model = (items[0][1].get("provenance", {}).get("model") or {})
        kind = "real weights" if model.get("kind") == "real" else "random weights, exact config: cost only"
        out.append(f"### {tag} ({kind})\n")
        out.append("| Figure | Ours | Seed method (chat rows: bare forward loop) | Limit | Ours vs limit | Source |")
        out.append("|---|---|---|---|---|---|")
        notes, commits = [], set()
        order = {"sentiment": 0, "injection": 1, "chat": 2, "startup": 3, "concurrency": 4}
        items = sorted(items, key=lambda pr: (order.get(pr[1].get("bench"), 9), -pr[1].get("split", {}).get("heldout_n", 0)))
        for path, r in items:
            name = path.name
            b = r.get("bench")
            rows = {"sentiment": _sentiment_rows, "chat": _chat_rows, "startup": _startup_rows,
                    "concurrency": _concurrency_rows, "injection": _injection_rows}.get(b, lambda *_: [])(name, r)
            for row in rows:
                out.append("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |")
            prov = r.get("provenance", {})
            commits.add((prov.get("git_head") or "?")[:10] + (" (prompts " + (prov.get("prompts_commit") or "?")[:10] + ")"))
            share = r.get("cpu_share")
            if share:
                notes.append(f"{name}: other processes used {share['others']:.0%} of the machine's CPU during the run")
            if b == "sentiment" and "accuracy_meaningless" not in r:
                notes.append(f"{name} confusion: " + _confusion_md(r))
            notes += [f"{name}: {x}" for x in shortfalls(r)]
        out.append("")
        out.append("Measured at commit(s): " + ", ".join(sorted(commits)) + ".")
        for n in notes:
            out.append(f"- {n}")
        out.append("")
    return "\n".join(out) if out else "(no results yet)"


DESIGN_START, DESIGN_END = "<!-- bench:design:start -->", "<!-- bench:design:end -->"


def design_table(path: Path) -> str:
    """The sentiment layouts measured on the dev split (bench/prompt_robust.py), best holds first."""
    if not path.is_file():
        return "(no design search results yet)"
    d = json.loads(path.read_text(encoding="utf-8"))
    lines = [f"{d['n']} dev reviews for accuracy; {d['bases']} short dev reviews × {len(d['attack_items']) // d['bases']} "
             "seen attacks for holds (among the reviews each layout labels right when clean).", "",
             "| Layout | Accuracy (calibrated) | Holds, seen families | Weakest family (raw: all 24 reviews) | Suffix tokens | Prefix tokens | ms per review (not comparable: other work ran during some runs) |",
             "|---|---|---|---|---|---|---|"]
    rows = sorted(d["variants"].items(), key=lambda kv: -(kv[1].get("holds_given_clean_correct") or kv[1].get("holds_calibrated") or 0))
    for name, v in rows:
        fams = v.get("holds_by_family", {})
        weakest = min(fams.items(), key=lambda kv: kv[1]) if fams else ("—", None)
        lines.append(f"| {name} | {_pct(v['accuracy_calibrated'])} | {_pct(v.get('holds_given_clean_correct'))} | "
                     f"{weakest[0]} {_pct(weakest[1])} | {v['suffix_tokens']} | {v['prefix_tokens']} | {v['ms_per_clean_item']:.0f} |")
    fitted = [(name, v["fit"]) for name, v in d["variants"].items() if "fit" in v]
    for name, f in fitted:
        u = f["uncertain"]
        lines += ["", f"Fitted on dev for `{name}`: ECE {f['ece_t1']:.3f} at temperature 1 (NLL-best temperature "
                  f"{f['best_temperature']}: ECE {f['ece_best']:.3f}); uncertain threshold {u['threshold']}, which flags "
                  f"{_pct(u['flagged_share_dev'])} of dev reviews, about the share of mixed ones among those read "
                  f"({_pct(u['mixed_share_read'])}); among the read ones it flags "
                  + ", ".join(f"{u['flagged_by_verdict'][k]} of {u['read_by_verdict'][k]} {k}" for k in u["read_by_verdict"])
                  + f" (precision {_pct(u['precision_mixed'])}, recall {_pct(u['recall_mixed'])} for mixed; the F1-best "
                  f"threshold {u['f1_best']['threshold']} would flag {_pct(u['f1_best']['flagged_share_dev'])})."]
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
    """The real-weights rows of the table that the README shows, one of each kind, in table order."""
    lines, seen, in_real = [], set(), False
    for line in table(results).splitlines():
        if line.startswith("### "):
            in_real = line.endswith("(real weights)") and not seen
            if in_real:
                lines += [line.replace("### ", "Measured here on ").rstrip() + ":", ""]
            continue
        if not in_real:
            continue
        if line.startswith("| Figure") or line.startswith("|---"):
            lines.append(line)
            continue
        key = next((k for k in SUMMARY_ROWS if line.startswith("| " + k)), None)
        if key and key not in seen:
            seen.add(key)
            lines.append(line)
    return "\n".join(lines)


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
