"""The results tables (into bench/README.md, between markers), the README's headline rows, and the plots.

    python -m bench.report [--results bench/results] [--stdout] [--no-plots]

Tables and plots only: every number is read from a result file (bench/records.py), and each row names
the file it came from. Each row has a key; the README's headline rows are picked by key (HEADLINE).
What the numbers mean is written by hand in bench/README.md, outside the generated blocks.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from . import plots, records as rec
from .common import BENCH_DIR, RESULTS_DIR

START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
SUMMARY_START, SUMMARY_END = "<!-- bench:summary:start -->", "<!-- bench:summary:end -->"
DESIGN_START, DESIGN_END = "<!-- bench:design:start -->", "<!-- bench:design:end -->"
POS, NEG = "正面", "负面"
# The README's headline rows, by key, in this order: one row per key from the real-weights results.
HEADLINE = ("sentiment.accuracy.n1000", "sentiment.paired.n1000", "sentiment.clear.agree", "sentiment.clear.clear2",
            "sentiment.ece.n1000", "sentiment.uncertain.n1000",
            "sentiment.latency.n200", "injection.all", "injection.seen", "injection.unseen", "startup.peak_serving",
            "concurrency.emotion.8")


@dataclass
class Row:
    key: str
    figure: str
    ours: str
    other: str
    limit: str
    note: str
    source: str


def _f(x, fmt="{:.1f}", none="—") -> str:
    return none if x is None else fmt.format(x)


_pct = lambda x: _f(x, "{:.1%}")  # noqa: E731


def sentiment_rows(r: rec.Sentiment) -> list[Row]:
    n, m, out = r.n, r.methods, []
    ours, seed, prev = m.get("ours"), m.get("seed"), m.get("previous")
    med = lambda x: _f(x.latency_ms.median if x else None, "{:.0f} ms")  # noqa: E731
    fl = r.floor or rec.Floor()
    out.append(Row(f"sentiment.latency.n{n}", f"Sentiment latency, median ({n} held-out)", med(ours), med(seed),
                   _f(fl.floor_ms.median, "{:.0f} ms"), f"{_f(fl.ours_over_floor.median, '{:.2f}× floor')}; seed/ours "
                   + _f(r.speedup.get("median"), "{:.2f}×"), r.name))
    if prev and ours:
        out.append(Row(f"sentiment.previous.n{n}", f"Sentiment latency, median ({n}): this layout vs the previous "
                       "release's prompt", med(ours), med(prev) + " (previous)", "",
                       _f(ours.latency_ms.median / prev.latency_ms.median, "ours/previous {:.2f}×"), r.name))
    if r.accuracy_meaningless or not (ours and seed and ours.metrics and seed.metrics):
        return out
    out += clear_rows(r)
    mo, ms = ours.metrics, seed.metrics
    out.append(Row(f"sentiment.accuracy.n{n}", f"Accuracy, raw labels ({n})", _pct(mo.accuracy), _pct(ms.accuracy),
                   "100%", f"seed unparsed: {ms.unparsed}", r.name))
    for label, en in ((POS, "positive"), (NEG, "negative")):
        out.append(Row(f"sentiment.f1.{en}.n{n}", f"F1 {label} ({en})", _f(mo.per_class.get(label, {}).get("f1"), "{:.3f}"),
                       _f(ms.per_class.get(label, {}).get("f1"), "{:.3f}"), "1.000", "", r.name))
    pair = rec.paired_comparison(r.items)
    if pair:
        out.append(Row(f"sentiment.paired.n{n}", f"Paired, same items ({n}): right by one method only", str(pair["ours_only"]),
                       str(pair["seed_only"]), "", f"both right {pair['both']}, both wrong {pair['neither']}; "
                       f"exact McNemar p = {pair['p']:.2f}", r.name))
    if ours.calibration:
        out.append(Row(f"sentiment.ece.n{n}", f"Confidence calibration error, ECE over 10 bins ({n})",
                       _f(ours.calibration.get("ece"), "{:.3f}"), "— (no confidence)", "0", "", r.name))
    if ours.uncertain and ours.uncertain.get("share") is not None:
        u = ours.uncertain
        out.append(Row(f"sentiment.uncertain.n{n}", f"Flagged uncertain ({n})", _pct(u["share"]), "—", "",
                       f"accuracy flagged {_pct(u.get('accuracy_flagged'))}, not flagged {_pct(u.get('accuracy_not_flagged'))}",
                       r.name))
    rv = r.reviewed or {}
    if rv.get("agree_n"):
        out.append(Row(f"sentiment.agreed.n{n}", f"Accuracy on hand-read items whose label I agree with "
                       f"({rv['agree_n']} of {rv['items_read']} read)", _pct(rv["agree"]["ours"]["accuracy"]),
                       _pct(rv["agree"]["seed"]["accuracy"]), "100%", "", r.name))
    return out


def _directions(items: list[dict], method: str) -> str:
    """"accuracy; errors each way (the larger direction's share); confident errors" for one method on items."""
    wrong = [x for x in items if x[method]["label"] != x["gold"]]
    each_way = [sum(x["gold"] == g for x in wrong) for g in (POS, NEG)]
    confident = sum(not x[method].get("uncertain") for x in wrong)  # the seed flags nothing: all confident
    lean = max(each_way) / len(wrong) if wrong else 0.0
    return (f"{_pct(1 - len(wrong) / len(items))}; {each_way[0]} / {each_way[1]} ({lean:.0%} one way); "
            f"{_pct(confident / len(items))} confident")


def clear_rows(r: rec.Sentiment) -> list[Row]:
    """Per clear set of a `bench.sentiment --clear` run: accuracy, errors each way, confident errors; ours vs the seed."""
    out = []
    for name in dict.fromkeys(x["set"] for x in r.items if x.get("set")):
        items = [x for x in r.items if x.get("set") == name and "ours" in x and "seed" in x]
        out.append(Row(f"sentiment.clear.{name}", f"Clear reviews, {name} ({len(items)} read by hand): accuracy; errors "
                       f"{POS}→{NEG} / {NEG}→{POS}; confident errors", _directions(items, "ours"),
                       _directions(items, "seed"), "100%", "", r.name))
    return out


def injection_rows(r: rec.Injection) -> list[Row]:
    if r.accuracy_meaningless or not r.families:
        return []
    o, s = r.methods.get("ours", rec.Method()), r.methods.get("seed", rec.Method())
    count = lambda seen: sum(len(f.templates) for f in r.families.values() if f.seen == seen)  # noqa: E731
    return [Row("injection.all", f"Injection: label holds, all families ({len(r.bases)} reviews × "
                f"{count(True) + count(False)} attacks; among reviews each method labels right when clean)",
                _pct(o.holds), _pct(s.holds), "100%", f"previous release: {_pct(r.methods.get('previous', rec.Method()).holds)}", r.name),
            Row("injection.seen", f"Injection: seen families ({count(True)} attacks the design was chosen against)",
                _pct(o.holds_seen), _pct(s.holds_seen), "100%", "", r.name),
            Row("injection.unseen", f"Injection: unseen families ({count(False)} attacks never run while choosing)",
                _pct(o.holds_unseen), _pct(s.holds_unseen), "100%", "", r.name)]


def chat_rows(r: rec.Chat) -> list[Row]:
    out = []
    for t in r.by_turns:
        c = t.ceiling
        out.append(Row(f"chat.ttft.{t.turns}", f"Chat TTFT, {t.turns} turn(s) of history ({t.prompt_tokens} prompt tokens)",
                       _f(t.ttft_ms.median, "{:.0f} ms"), "", _f(c.ttft_floor_ms, "{:.0f} ms"),
                       _f(t.ttft_ms.median / c.ttft_floor_ms if t.ttft_ms.median else None, "{:.2f}× floor"), r.name))
        out.append(Row(f"chat.decode.{t.turns}", f"Chat decode, {t.turns} turn(s)", _f(t.decode_tps.median, "{:.2f} tok/s"),
                       _f(t.bare_decode_tps.median, "{:.2f} tok/s (bare loop)"), _f(c.decode_tps, "{:.2f} tok/s"),
                       f"{_pct(t.decode_fraction_of_ceiling)} of ceiling; at the best GEMV kernel's rate "
                       f"({_f(c.gemv_gbs)} GB/s) {_f(c.decode_tps_at_gemv_rate, '{:.2f} tok/s')}", r.name))
    conv = r.conversation or {}
    if conv.get("reuse") and conv.get("fresh"):
        reuse, fresh = conv["reuse"], conv["fresh"]
        out.append(Row("chat.reuse", f"Chat TTFT, turn {reuse[-1].turn} of one conversation: KV reuse vs none",
                       f"{reuse[-1].first_token_ms:.0f} ms", f"{fresh[-1].first_token_ms:.0f} ms (no reuse)", "",
                       f"turn {reuse[-1].turn} / turn 1 with reuse: {reuse[-1].first_token_ms / reuse[0].first_token_ms:.2f}×", r.name))
    return out


def kv_append_rows(r: rec.KvAppend) -> list[Row]:
    return [Row(f"kv_append.{c.context}", f"Decode step at a {c.context}-token context: KV appended in place vs torch.cat per token",
                _f(c.step_ms["GrowingCache"].median, "{:.1f} ms"), _f(c.step_ms["DynamicCache"].median, "{:.1f} ms (torch.cat)"),
                "", f"{c.growing_speedup:.2f}× as fast; logits {'equal' if c.same_logits else 'DIFFER'}", r.name)
            for c in r.by_context]


def packing_rows(r: rec.Packing) -> list[Row]:
    return [Row(f"packing.{key}", f"oneDNN-packed weights vs F.linear, whole engine: {what}",
                f"{r.median_ms['packed'][key]:.1f} ms", f"{r.median_ms['F.linear'][key]:.1f} ms (F.linear)", "",
                f"packed {r.packed_speedup[key]:.2f}× as fast; weighted {r.weighted_packed_speedup:.2f}×; app chose {r.chosen}",
                r.name) for key, what in (("label_ms", "a label"), ("decode_step_ms", "a chat decode step (1 row)"),
                                          ("prefill_ms", "a chat prefill"))]


def startup_rows(r: rec.Startup) -> list[Row]:
    lim, wb, _gib = r.limit, r.weight_bytes_fp32, lambda x: f"{x / 2**30:.2f} GiB"
    serving = "worst case the limits admit" if r.worst_case else "serving"
    return [Row("startup.ready", "Start-up: process start → /healthz OK", _f(r.ready_s.median, "{:.1f} s"), "",
                _f(lim and lim.ready_s, "{:.1f} s (imports + one read of the weights)"),
                _f(r.ready_s.median / lim.ready_s if lim and r.ready_s.median else None, "{:.2f}× limit")
                + (f"; imports {lim.import_s:.1f} s, weights read {lim.read_weights_s:.1f} s" if lim else ""), r.name),
            Row("startup.peak_loading", "Peak RSS while loading", _gib(r.peak_rss_loading), "", _gib(wb) + " (FP32 weights)",
                f"{r.peak_rss_loading / wb:.2f}× weights", r.name),
            Row("startup.peak_serving", f"Peak RSS, {serving}", _gib(r.peak_rss_serving), "", _gib(wb),
                f"{r.peak_rss_serving / wb:.2f}× weights", r.name)]


def concurrency_rows(r: rec.Concurrency) -> list[Row]:
    return [Row(f"concurrency.{r.mode}.{lv.clients}", f"/api/infer ({r.mode}), {lv.clients} client(s): throughput; p50 / p95; errors",
                f"{_f(lv.throughput_rps, '{:.2f} req/s')}; {_f(lv.p50_ms, '{:.0f}')} / {_f(lv.p95_ms, '{:.0f} ms')}; {lv.errors} errors",
                "", "", _f(lv.throughput_vs_single, "{:.2f}× single-client throughput") + "; server model time median "
                + _f(lv.server_model_ms.median, "{:.0f} ms"), r.name) for lv in r.levels]


def batch_rows(r: rec.Batch) -> list[Row]:
    rates = r.reviews_per_s
    out = [Row("batch.rate", f"Reviews/s, {r.n} held-out reviews: classify_many / one-by-one / seed",
               f"{rates['classify_many']:.2f}", " / ".join(_f(rates.get(k), "{:.2f}") for k in ("one_by_one", "seed")), "",
               f"{r.speedup_vs_one_by_one:.2f}× one-by-one, {_f(r.speedup_vs_seed)}× seed; same label on {r.same_labels} "
               f"of {r.n}; {_pct(r.share_of_flop_floor)} of the FLOP limit", r.name)]
    if r.chat_wait:
        w = r.chat_wait
        out.append(Row("batch.chat_wait", "A chat's first token while a batch runs", f"{w.first_token_ms_during_batch:.0f} ms",
                       "", "", f"batch slices: median {w.slice_ms.median:.0f} ms, longest {w.slice_ms.max:.0f} ms", r.name))
    return out


ROWS = {"sentiment": sentiment_rows, "injection": injection_rows, "batch": batch_rows, "chat": chat_rows,
        "kv_append": kv_append_rows, "packing": packing_rows, "startup": startup_rows, "concurrency": concurrency_rows}
MAIN_HEADER = ["Figure", "Ours", "Compared with (seed method, bare loop, ...)", "Limit", "Ours vs limit", "Source"]


def rows_of(results: list[rec.Result]) -> list[Row]:
    order = list(ROWS)
    return [row for r in sorted(results, key=lambda r: order.index(r.bench)) for row in ROWS[r.bench](r)]


def _md(header: list[str], rows: list[list]) -> list[str]:
    line = lambda cells: "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"  # noqa: E731
    return [line(header), "|" + "---|" * len(header)] + [line(r) for r in rows]


def _main(rows: list[Row]) -> list[str]:  # the main table: one row per figure, naming its result file
    return _md(MAIN_HEADER, [[r.figure, r.ours, r.other, r.limit, r.note, r.source] for r in rows])


def _by_model(results: list[rec.Result]) -> dict[str, list[rec.Result]]:
    out: dict[str, list[rec.Result]] = {}
    for r in sorted(results, key=lambda r: (r.provenance.model.kind != "real", r.tag)):
        out.setdefault(r.tag, []).append(r)
    return out


def table(results: list[rec.Result]) -> str:
    out = []
    for tag, items in _by_model(results).items():
        kind = "real weights" if items[0].provenance.model.kind == "real" else "random weights, exact config: cost only"
        out += [f"### {tag} ({kind})", ""] + _main(rows_of(items)) + ["", f"#### Runs, {tag}", ""]
        out += _md(["Source", "Commit", "Prompts commit", "CPU used by other processes during the run"],
                   [[r.name, (r.provenance.git_head or "?")[:10], (r.provenance.prompts_commit or "?")[:10],
                     _pct(r.cpu_share and r.cpu_share.others)] for r in items]) + [""]
    return "\n".join(out) if out else "(no results yet)"


def headline(results: list[rec.Result]) -> list[Row]:
    """The README's rows: for each HEADLINE key, the row of the newest real-weights result (the largest run first)."""
    real = sorted((r for r in results if r.provenance.model.kind == "real"), key=lambda r: r.provenance.when, reverse=True)
    rows = {}
    for row in rows_of(sorted(real, key=lambda r: -getattr(r, "n", 0))):
        rows.setdefault(row.key, row)
    return [rows[k] for k in HEADLINE if k in rows]


ISA_FIGURES = (("batch.rate", "Reviews/s: classify_many / one-by-one / seed"), ("chat.decode.1", "Chat decode, 1 turn"),
               ("chat.reuse", "Chat TTFT at turn 8: KV reuse / none"), ("kv_append.1500", "Decode step at 1,500 tokens: in place / torch.cat"),
               ("packing.decode_step_ms", "oneDNN-packed vs F.linear: a decode step"), ("startup.ready", "Start-up to /healthz"))


def isa_rows(results: list[rec.Result]) -> list[list[str]]:
    """Speed figures on the same machine with AVX-512 and capped to AVX2, real weights and the product's shape."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in sorted(results, key=lambda r: r.provenance.when):  # the newest wins
        if r.bench == "startup" and r.worst_case or not (r.provenance.isa_caps or r.bench in ("batch", "packing", "kv_append")
                                                         or r.name.endswith("avx512.json")):
            continue
        shape = "Qwen1.5-0.5B shape" if r.provenance.model.kind == "random" else "stand-in"
        for row in rows_of([r]):
            if row.key in dict(ISA_FIGURES):
                value = row.ours + (f" / {row.other}" if row.other else "") + f" ({row.note.split(';')[0]})"
                cells.setdefault((row.key, shape), {})[r.provenance.isa] = value
                cells[(row.key, shape)]["source"] = cells[(row.key, shape)].get("source", "") + f" {r.name}"
    return [[f"{what}, {shape}", by.get("AVX-512", "—"), by.get("AVX2", "—"), by["source"].strip()]
            for key, what in ISA_FIGURES for (k, shape), by in sorted(cells.items()) if k == key]


def summary(results: list[rec.Result]) -> str:
    lines = ["Measured on real-0.5b (real weights):", ""] + _main(headline(results))
    return "\n".join(lines + [""] + _md(["Speed by instruction set", "AVX-512", "AVX2 only", "Source"], isa_rows(results)))


def design_table(path: Path) -> str:
    """The sentiment layouts measured on the dev split (bench/prompt_robust.py), best holds first."""
    if not path.is_file():
        return "(no design search results yet)"
    import json

    d = rec.read(rec.PromptRobust, json.loads(path.read_text(encoding="utf-8")))
    header = ["Layout", f"Accuracy, calibrated ({d.n} dev reviews)", f"Holds, seen families ({d.bases} short dev reviews × "
              f"{len(d.attack_items) // max(d.bases, 1)} attacks; among those labelled right when clean)",
              f"Weakest family (raw: all {d.bases} reviews)", "Suffix tokens", "Prefix tokens", "ms per review"]
    rows = []
    for name, v in sorted(d.variants.items(), key=lambda kv: -(kv[1].holds_given_clean_correct or 0)):
        weak = min(v.holds_by_family, key=v.holds_by_family.get) if v.holds_by_family else None
        rows.append([name, _pct(v.accuracy_calibrated), _pct(v.holds_given_clean_correct),
                     f"{weak} {_pct(v.holds_by_family[weak])}" if weak else "—", v.suffix_tokens, v.prefix_tokens,
                     f"{v.ms_per_clean_item:.0f}"])
    fitted = [[f"`{name}`", f"{v.fit['ece_t1']:.3f}", v.fit["best_temperature"], f"{v.fit['ece_best']:.3f}",
               v.fit["uncertain"]["threshold"], _pct(v.fit["uncertain"]["flagged_share_dev"]),
               f"{_pct(v.fit['uncertain']['precision_mixed'])} / {_pct(v.fit['uncertain']['recall_mixed'])}"]
              for name, v in d.variants.items() if v.fit]
    return "\n".join(_md(header, rows) + (["", "#### Fitted on dev", ""] + _md(
        ["Layout", "ECE at temperature 1", "NLL-best temperature", "ECE there", "Uncertain threshold", "Dev reviews flagged",
         "Precision / recall for mixed"], fitted) if fitted else []))


def write_block(path: Path, text: str, start: str = START, end: str = END) -> None:
    """Replace what lies between start and end in path (appending the markers when missing)."""
    body = path.read_text(encoding="utf-8") if path.is_file() else ""
    if start not in body or end not in body:
        body = body.rstrip() + f"\n\n{start}\n{end}\n"
    path.write_text(re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{text}\n{end}", body, flags=re.S),
                    encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS_DIR)
    p.add_argument("--readme", type=Path, default=BENCH_DIR / "README.md")
    p.add_argument("--project-readme", type=Path, default=BENCH_DIR.parent / "README.md")
    p.add_argument("--stdout", action="store_true", help="print the tables instead of writing the READMEs")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args()
    results = rec.load(args.results)
    if args.stdout:
        return print(table(results) + "\n" + summary(results))
    write_block(args.readme, table(results))
    write_block(args.readme, design_table(args.results / "prompt_robust.json"), DESIGN_START, DESIGN_END)
    write_block(args.project_readme, summary(results), SUMMARY_START, SUMMARY_END)
    print(f"updated {args.readme} and {args.project_readme}")
    for path in [] if args.no_plots else plots.draw(results, args.results):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
