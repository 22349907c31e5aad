"""Smoke test of the benchmarks' core functions on the tiny model (structure only, no timings judged).

The benchmarks themselves are run by hand (`python -m bench.<name>`); nothing here measures speed.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("snownlp")

import pipeline  # noqa: E402
from bench import batch, chat, data, injection, kv_append, machine, records, report, sentiment  # noqa: E402
from bench.methods import METHODS, UNPARSED, parse_seed  # noqa: E402


@pytest.fixture(scope="module")
def limits(tiny_engine):
    cost = machine.model_cost(tiny_engine.model)
    return {"matmul": machine.measure_matmul(cost.hidden, cost.intermediate, tokens=(1, 8), min_seconds=0.0, max_reps=3),
            "bandwidth": machine.measure_bandwidth(gib=0.01, reps=2)}


def test_seed_parsing():
    assert parse_seed("正面") == "正面"
    assert parse_seed("这是负面的") == "负面"
    assert parse_seed("neutral") == UNPARSED


def test_model_cost_counts_every_parameter_once(tiny_engine, tiny_model_dir):
    stock = pipeline.load_engine(tiny_model_dir, threads=1, pack_weights=False).model
    cost = machine.model_cost(stock)
    unique = {p.data_ptr(): p.numel() for p in stock.parameters()}
    assert cost.params_total == sum(unique.values())
    assert cost.params_embedding + cost.params_lm_head + cost.params_layers_linear + cost.params_other == cost.params_total
    assert cost.forward_flops(4, past=10) > cost.forward_flops(4, past=0) > 0
    assert machine.model_cost(tiny_engine.model) == cost  # packed layers count as the same weights


def test_sentiment_run_and_summary(tiny_engine, limits, tmp_path):
    items = [(text[:30], label) for text, label in data.heldout(4)]  # the tiny engine takes 128 tokens at most
    assert len(items) == 4
    rows = sentiment.run_items(tiny_engine, items, list(METHODS), sentiment.Deadline(300), progress=False)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    out = sentiment.summarise(rows, list(METHODS), tiny_engine, limits, {0: {"verdict": "agree", "sha": rows[0]["key"]}})
    for m in METHODS:
        metrics = out["methods"][m]["metrics"]
        assert metrics["n"] == 4 and 0 <= metrics["accuracy"] <= 1
        assert set(metrics["confusion"]) == {"正面", "负面"}
        assert out["methods"][m]["latency_ms"]["n"] == 4
    assert out["floor"]["floor_ms"]["median"] > 0
    assert out["reviewed"]["agree_n"] == 1
    json.dumps(out, ensure_ascii=False)


def test_variants_run_on_their_engines(tiny_engine, tiny_model_dir, limits):
    from bench.methods import VARIANTS

    stock = pipeline.load_engine(tiny_model_dir, threads=1, max_input_tokens=128, pack_weights=False)
    calls = []
    for name in ("packed", "stock"):
        engine = {"packed": tiny_engine, "stock": stock}[name]
        original = engine.classify
        engine.classify = lambda text, _o=original, _n=name: calls.append(_n) or _o(text)
    try:
        items = [(text[:30], label) for text, label in data.heldout(2)]
        rows = sentiment.run_items(tiny_engine, items, list(VARIANTS), sentiment.Deadline(300), progress=False,
                                   stock_engine=stock)
    finally:
        del tiny_engine.classify, stock.classify
    # only the two "ours" variants call classify: per item, once on each engine
    assert [sorted(calls[i:i + 2]) for i in (0, 2)] == [["packed", "stock"]] * 2
    assert all(set(VARIANTS) <= set(r) for r in rows)
    out = sentiment.summarise(rows, list(VARIANTS), tiny_engine, limits)
    assert set(out["speedup"]["variants_over_ours_median"]) == set(VARIANTS) - {"ours"}


def test_profile_of_ours_adds_up(tiny_engine):
    texts = [text[:30] for text, _ in data.heldout(4)] + ["长" * 5000]  # the last is over the limit: skipped
    prof = sentiment.profile_ours(tiny_engine, texts)
    assert prof["texts"] == 4
    assert sum(prof["share_by_kind"].values()) == pytest.approx(1.0)
    assert prof["share_by_kind"] == pytest.approx(sentiment.profile_shares(prof["self_cpu_us"]))
    # the profile saw the model's linear layers and element-wise ops (their shares are timings: not judged here)
    kinds = {sentiment.op_kind(name) for name in prof["self_cpu_us"]}
    assert {"linear", "elementwise"} <= kinds and prof["share_by_kind"]["linear"] > 0


@pytest.mark.parametrize("name, kind", [
    ("mkldnn::_linear_pointwise", "linear"), ("aten::linear", "linear"), ("aten::addmm", "linear"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"), ("aten::mul", "elementwise"),
    ("aten::silu", "elementwise"), ("aten::empty", "other"), ("aten::multinomial", "other")])
def test_op_kind(name, kind):
    assert sentiment.op_kind(name) == kind


def test_chat_paths(tiny_engine):
    r = chat.engine_run(tiny_engine, 1, 4)
    assert r["prompt_tokens"] > 0 and 1 <= r["new_tokens"] <= 4
    b = chat.bare_run(tiny_engine, 1, 3)
    assert b["step_ms"]["n"] == 2


def test_kv_append_times_both_caches_in_turn_and_their_logits_agree(tiny_engine):
    r = kv_append.compare(tiny_engine, 40, 3)
    assert {name: len(t) for name, t in r["times"].items()} == {"DynamicCache": 3, "GrowingCache": 3}
    assert r["same_logits"] is True


def test_chat_conversation_with_and_without_reuse(tiny_engine):
    fresh, reuse = chat.conversation_run(tiny_engine, False, 4), chat.conversation_run(tiny_engine, True, 4)
    assert [r["turn"] for r in reuse] == list(range(1, len(chat.HISTORY) + 1))
    assert [r["prompt_tokens"] for r in reuse] == [r["prompt_tokens"] for r in fresh]  # the same conversation
    assert all(r["reused_tokens"] == 0 for r in fresh) and reuse[0]["reused_tokens"] == 0
    assert all(r["reused_tokens"] > 0 for r in reuse[1:] if not r["history_dropped"])
    assert reuse[-1]["kv_store_bytes"] > 0 and tiny_engine.conversations is not None  # the engine's own store is back


def test_batch_paths_agree_and_the_chat_goes_between_slices(tiny_engine):
    texts = [t for t, _ in data.heldout(200) if len(t) <= 60][:24]  # within the tiny model's 128 tokens
    single, _ = batch.one_by_one(tiny_engine, texts)
    together, _ = batch.batched(tiny_engine, texts, 4)
    assert [s.label for s in single] == [s.label for s in together]
    assert batch.review_tokens(tiny_engine, texts) > len(texts)
    wait = batch.chat_wait(tiny_engine, texts, after_slices=1)
    assert wait["slices"] >= 2 and wait["first_token_ms_during_batch"] > 0


def test_report_table_from_results(tiny_engine, limits, tmp_path):
    items = [(text[:30], label) for text, label in data.heldout(2)]
    rows = sentiment.run_items(tiny_engine, items, ["ours", "seed"], sentiment.Deadline(300), progress=False)
    result = {"bench": "sentiment", "provenance": {"model": {"tag": "tiny-random", "kind": "random"}},
              "split": {"items_run": 2, "heldout_n": 2}, "accuracy_meaningless": "random", "limits": limits,
              "cost": machine.model_cost(tiny_engine.model).as_dict(),
              **sentiment.summarise(rows, ["ours", "seed"], tiny_engine, limits), "items": rows}
    (tmp_path / "sentiment-n2-tiny-random.json").write_text(json.dumps(result, ensure_ascii=False))
    text = report.table(records.load(tmp_path))
    row = _row([line for line in text.splitlines() if line.startswith("| ")], "Sentiment latency, median (2 held-out)",
               source="sentiment-n2-tiny-random.json")
    assert f"| {result['methods']['ours']['latency_ms']['median']:.0f} ms |" in row
    assert f"{result['floor']['ours_over_floor']['median']:.2f}× floor" in row
    assert all(not line or line.startswith(("#", "|")) for line in text.splitlines()), "tables and headings only"
    readme = tmp_path / "README.md"
    report.write_block(readme, text)
    report.write_block(readme, text)
    assert readme.read_text().count(report.START) == 1


def test_prompt_robust_margins_decide_as_classify_does(tiny_engine):
    from bench import prompt_robust

    texts = [text[:30] for text, _ in data.dev(4)]
    scorer = tiny_engine.sentiment
    for text, margin in zip(texts, prompt_robust.margins(tiny_engine, scorer, texts)):
        assert prompt_robust.decide(margin, scorer.bias.tolist()) == tiny_engine.classify(text).label
    assert prompt_robust.decide([1.0, -3.0], [0.0, -3.5]) == "正面"  # mean of calibrated log-odds: (1 + 0.5) / 2
    assert prompt_robust.decide([1.0, -3.0], [0.0, 0.0]) == "负面"
    bases = prompt_robust.attack_bases(6)
    assert [label for _, label in bases].count("正面") == 3 and all(len(t) <= 150 for t, _ in bases)


@pytest.mark.parametrize("placement, expected", [
    ("before", "XX好。很差。"), ("after", "好。很差。XX"), ("middle", "好。XX很差。"),
])
def test_injection_places_the_attack(placement, expected):
    assert injection.insert("好。很差。", placement, "XX") == expected


def test_injection_attacks_push_to_the_other_label_in_every_family():
    attacks = injection.attacked("质量很差。", "负面")
    assert {family for family, _ in attacks} == set(injection.FAMILIES)
    assert all("负面" not in text.replace("质量很差。", "") for _, text in attacks)
    seen = injection.attacked("质量很差。", "负面", seen=True)
    assert seen and all(injection.FAMILIES[f][0] for f, _ in seen)
    assert len(seen) + len(injection.attacked("质量很差。", "负面", seen=False)) == len(attacks)


def test_injection_summary_counts_holds_among_clean_correct():
    def row(index, family, gold, ours):
        return {"index": index, "gold": gold, "family": family, "ours": {"label": ours}}
    rows = [row(0, "clean", "负面", "负面"), row(0, "ignore", "负面", "负面"), row(0, "before", "负面", "正面"),
            row(1, "clean", "正面", "负面"), row(1, "ignore", "正面", "正面"), row(1, "before", "正面", "负面")]
    s = injection.summarise(rows, ["ours"])["methods"]["ours"]
    assert s["attacked_clean_correct"] == 2 and s["holds"] == 0.5  # review 1 was wrong when clean: not counted
    assert (s["holds_seen"], s["holds_unseen"]) == (1.0, 0.0)
    assert s["holds_raw"] == 0.5 and s["clean_accuracy"] == 0.5


def test_calibration_error_bins():
    perfect = sentiment.calibration_error([0.75] * 4 + [1.0] * 2, [True, True, True, False, True, True])
    assert perfect["ece"] == pytest.approx(0.0)
    off = sentiment.calibration_error([0.95] * 4, [True, False, True, False])
    assert off["ece"] == pytest.approx(0.45) and off["bins"][0]["n"] == 4


def _stored_results():
    from pathlib import Path

    results_dir = Path(__file__).resolve().parent.parent / "bench" / "results"
    return results_dir, records.load(results_dir)


def _row(rows: list[str], *cells, source: str | None = None) -> str:
    """The one table row of `rows` that starts with these cells; a main-table row: whose figure starts with the one
    cell given and whose last cell is `source`."""
    prefix = "| " + " | ".join(str(c) for c in cells) + ("" if source else " |")
    found = [line for line in rows if line.startswith(prefix) and (source is None or line.endswith(f"| {source} |"))]
    assert len(found) == 1, f"no single row starts with {prefix!r}" + (f" from {source}" if source else "")
    return found[0]


def test_project_readme_headline_rows_are_the_reports():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split(report.SUMMARY_START)[1].split(report.SUMMARY_END)[0].strip()
    assert block == report.summary(records.load(root / "bench" / "results")).strip(), \
        "regenerate with: python -m bench.report"


def test_every_headline_key_finds_its_row():
    """The README's rows are picked by key: a key that no longer matches a row would drop a figure silently."""
    _, results = _stored_results()
    assert [row.key for row in report.headline(results)] == list(report.HEADLINE)
    isa = {line[0] for line in report.isa_rows(results)}
    for _, what in report.ISA_FIGURES:
        assert any(figure.startswith(what) for figure in isa), what


def test_report_is_tables_and_headings_only():
    results_dir, results = _stored_results()
    for text in (report.table(results), report.design_table(results_dir / "prompt_robust.json")):
        for line in text.splitlines():
            assert not line or line.startswith(("#", "|")), f"prose in a generated block: {line!r}"
    caption, blank, *rest = report.summary(results).splitlines()
    assert caption.startswith("Measured on ") and not blank and all(not line or line.startswith("|") for line in rest)


def test_records_ignore_extra_fields_and_default_missing_ones():
    r = records.read(records.Chat, {"bench": "chat", "new_field": 1, "by_turns": [{"turns": 1, "extra": {"x": 2}}]})
    assert r.by_turns[0].turns == 1 and r.by_turns[0].ttft_ms.median is None and r.conversation is None
    assert records.read(records.Provenance, {"isa_caps": {"ATEN_CPU_CAPABILITY": "avx2"}}).isa == "AVX2"
    assert records.read(records.Provenance, {"cpu_isa_flags": ["avx2", "avx512f"]}).isa == "AVX-512"


def test_report_tables_keep_every_figure():
    """Each figure of the main tables is the raw JSON's value (read here without the records), in the row of its key."""
    results_dir, results = _stored_results()
    rows = [line for line in report.table(results).splitlines() if line.startswith("| ")]
    benches = set()
    for r in results:
        raw, name = json.loads(r.path.read_text(encoding="utf-8")), r.name
        benches.add(raw["bench"])
        prov, share = raw.get("provenance", {}), (raw.get("cpu_share") or {}).get("others")
        _row(rows, name, (prov.get("git_head") or "?")[:10], (prov.get("prompts_commit") or "?")[:10],
             "—" if share is None else f"{share:.1%}")
        if raw["bench"] == "sentiment":
            n, ours = raw["split"]["items_run"], raw["methods"]["ours"]
            assert f"| {ours['latency_ms']['median']:.0f} ms |" in _row(rows, f"Sentiment latency, median ({n} held-out)", source=name)
            if "accuracy_meaningless" not in raw:
                seed = raw["methods"]["seed"]
                assert f"| {ours['metrics']['accuracy']:.1%} | {seed['metrics']['accuracy']:.1%} |" \
                    in _row(rows, f"Accuracy, raw labels ({n})", source=name)
                pair = records.paired_comparison(raw["items"])
                assert f"| {pair['ours_only']} | {pair['seed_only']} |" in _row(rows, f"Paired, same items ({n})", source=name)
                assert f"| {ours['calibration']['ece']:.3f} |" in _row(rows, f"Confidence calibration error, ECE over 10 bins ({n})", source=name)
        elif raw["bench"] == "injection":
            assert f"| {raw['methods']['ours']['holds']:.1%} |" in _row(rows, "Injection: label holds, all families", source=name)
        elif raw["bench"] == "chat":
            for t in raw["by_turns"]:
                row = _row(rows, f"Chat decode, {t['turns']} turn(s)", source=name)
                assert f"| {t['decode_tps']['median']:.2f} tok/s | {t['bare_decode_tps']['median']:.2f} tok/s (bare loop) |" in row
        elif raw["bench"] == "startup":
            assert f"| {raw['ready_s']['median']:.1f} s |" in _row(rows, "Start-up: process start", source=name)
            assert f"{raw['peak_rss_loading'] / raw['weight_bytes_fp32']:.2f}× weights" in _row(rows, "Peak RSS while loading", source=name)
        elif raw["bench"] == "packing":
            row = _row(rows, "oneDNN-packed weights vs F.linear, whole engine: a chat decode step", source=name)
            assert f"packed {raw['packed_speedup']['decode_step_ms']:.2f}× as fast" in row
        elif raw["bench"] == "kv_append":
            for c in raw["by_context"]:
                assert f"{c['growing_speedup']:.2f}× as fast" in _row(rows, f"Decode step at a {c['context']}-token context", source=name)
        elif raw["bench"] == "concurrency":
            for lv in raw["levels"]:
                row = _row(rows, f"/api/infer ({raw['mode']}), {lv['clients']} client(s):", source=name)
                assert f"{lv['throughput_vs_single']:.2f}× single-client" in row
        elif raw["bench"] == "batch":
            assert f"| {raw['reviews_per_s']['classify_many']:.2f} |" in _row(rows, f"Reviews/s, {raw['n']} held-out", source=name)
    assert benches == set(records.RECORDS)


def test_design_table_keeps_every_figure():
    results_dir, _ = _stored_results()
    d = json.loads((results_dir / "prompt_robust.json").read_text(encoding="utf-8"))
    rows = [line for line in report.design_table(results_dir / "prompt_robust.json").splitlines() if line.startswith("| ")]
    assert any(f"({d['n']} dev reviews)" in line and f"{d['bases']} short dev reviews" in line for line in rows)
    for name, v in d["variants"].items():
        holds = v.get("holds_given_clean_correct")
        _row(rows, name, f"{v['accuracy_calibrated']:.1%}", "—" if holds is None else f"{holds:.1%}")
        fams = v["holds_by_family"]
        weakest = min(fams, key=fams.get)
        assert f"| {weakest} {fams[weakest]:.1%} | {v['suffix_tokens']} | {v['prefix_tokens']} | {v['ms_per_clean_item']:.0f} |" \
            in _row(rows, name)
        if "fit" in v:
            f, u = v["fit"], v["fit"]["uncertain"]
            row = _row(rows, f"`{name}`", f"{f['ece_t1']:.3f}", f["best_temperature"], f"{f['ece_best']:.3f}", u["threshold"],
                       f"{u['flagged_share_dev']:.1%}")
            assert f"{u['precision_mixed']:.1%} / {u['recall_mixed']:.1%}" in row


@pytest.mark.parametrize("b, c, p", [(0, 0, 1.0), (5, 5, 1.0), (0, 10, 2 / 1024), (1, 9, 22 / 1024)])
def test_mcnemar_exact_p(b, c, p):
    assert records.mcnemar_exact_p(b, c) == pytest.approx(p)
    assert records.mcnemar_exact_p(c, b) == pytest.approx(p)


def test_paired_comparison_counts_each_item_once():
    def item(gold, ours, seed):
        return {"gold": gold, "ours": {"label": ours}, "seed": {"label": seed}}
    items = [item("正面", "正面", "负面"), item("正面", "正面", "正面"), item("负面", "正面", "负面"),
             item("负面", "正面", "unparsed"), item("负面", "负面", "负面")]
    pair = records.paired_comparison(items)
    assert (pair["ours_only"], pair["seed_only"], pair["both"], pair["neither"]) == (1, 1, 2, 1)
    assert pair["p"] == 1.0
    assert records.paired_comparison([]) is None


def test_dev_verdicts_match_the_dev_split():
    from bench import prompt_robust

    verdicts = prompt_robust.load_dev_verdicts()
    assert len(verdicts) == 120 and set(verdicts.values()) == {"agree", "mixed", "contradicts"}


def test_the_adopted_layout_is_the_one_measured_as_seed_drop_dev_mean():
    import dataclasses

    from bench import prompt_robust
    from bench.methods import FENCED_PROMPT, LAYOUTS
    from pipeline.prompts import SENTIMENT_PROMPT

    measured = prompt_robust.VARIANTS["seed_drop_dev_mean"]
    # The layout and calibration were measured there; the threshold was fit after (bench/README.md).
    assert dataclasses.replace(measured, uncertain_below=SENTIMENT_PROMPT.uncertain_below) == SENTIMENT_PROMPT
    assert LAYOUTS["seed_scored_drop"] == SENTIMENT_PROMPT  # what bench.injection compared the fence with
    # The fenced layout the benchmarks compare with is the one measured as tagged_drop, calibrated as ours.
    assert dataclasses.replace(prompt_robust.VARIANTS["tagged_drop_dev_mean"],
                               uncertain_below=SENTIMENT_PROMPT.uncertain_below) == FENCED_PROMPT


def test_packing_bench_times_both_layouts_in_turn_and_reports_them(tmp_path):
    from bench import packing as packing_bench

    r = packing_bench.main(["--shape", "tiny", "--cache-dir", str(tmp_path / "models"), "--out-dir", str(tmp_path),
                            "--threads", "1", "--reviews", "2", "--rounds", "2", "--decode-steps", "2", "--turns", "1"])
    assert {kind: {what: len(t) for what, t in by.items()} for kind, by in r["times"].items()} == {
        kind: {"label_ms": 2, "decode_step_ms": 2, "prefill_ms": 2} for kind in ("packed", "F.linear")}
    assert r["same_labels"] == 2 and r["app_linear_path"].startswith(("oneDNN packed", "torch F.linear"))
    assert r["prefill_tokens"] > 0
    text = report.table(records.load(tmp_path))
    assert "whole engine: a chat decode step (1 row)" in text and "; app chose " in text


def test_clear_set_candidates_rows_and_build_cost(tiny_engine):
    methods = ["ours", "seed", "seed_scored"]
    items = [(text[:30], label) for text, label in data.heldout(4)]
    rows = sentiment.run_items(tiny_engine, items, methods, sentiment.Deadline(300), progress=False)
    for r, name in zip(rows, ("agree", "agree", "clear2", "clear2")):
        r["set"] = name
    out = sentiment.candidates(rows, methods, tiny_engine)
    assert set(out["biases"]) == {"ours", "seed_scored"}  # the seed generates: nothing to calibrate
    adopted = tiny_engine.sentiment.prompt.calibration
    assert out["biases"]["ours"][adopted] == pytest.approx(float(tiny_engine.sentiment.bias.mean()), abs=1e-4)
    for name in ("agree", "clear2"):  # the adopted candidate is what the engine answered
        ran = [r for r in rows if r["set"] == name]
        right = sum(r["ours"]["label"] == r["gold"] for r in ran) / len(ran)
        assert out["table"][f"ours+{adopted}"][name]["accuracy"] == pytest.approx(right)
        assert out["table"]["seed"][name]["n"] == len(ran)
    record = records.read(records.Sentiment, {"items": rows})
    cells = {row.key: row for row in report.clear_rows(record)}
    assert set(cells) == {"sentiment.clear.agree", "sentiment.clear.clear2"}
    first = [r for r in rows if r["set"] == "agree"]
    wrong = sum(r["ours"]["label"] != r["gold"] for r in first)
    assert cells["sentiment.clear.agree"].ours.startswith(f"{1 - wrong / len(first):.1%};")
    cost = sentiment.calibration_cost(tiny_engine, repeats=1)
    assert set(cost) == {"none", "content_free", adopted, f"{adopted}, computed"} and all(len(v) == 1 for v in cost.values())
