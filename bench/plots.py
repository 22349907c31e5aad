"""The plots next to the result files (bench/results/*.png), from the typed records; python -m bench.report draws them."""

from __future__ import annotations

from pathlib import Path

from . import records as rec


def draw(results: list[rec.Result], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for r in results:
        if r.bench == "sentiment" and r.n == max(x.n for x in results if x.bench == "sentiment" and x.tag == r.tag):
            fig, ax = plt.subplots(figsize=(7, 4))
            series = [(f"{m}: per review", [it[m]["ms"] for it in r.items if m in it]) for m in ("ours", "seed")]
            series = [(label, xs) for label, xs in series if xs]
            ax.boxplot([xs for _, xs in series], orientation="horizontal", whis=(5, 95), flierprops={"markersize": 2})
            ax.set_yticks(range(1, len(series) + 1), [label for label, _ in series])
            ax.set_xscale("log")
            ax.set(xlabel="ms per review (log scale); whiskers p5-p95", title=f"Sentiment latency, {r.n} held-out reviews, {r.tag}")
            name = f"sentiment-latency-{r.tag}.png"
        elif r.bench == "chat" and not r.name.endswith(("avx2.json", "avx512.json")):
            fig, ax = plt.subplots(figsize=(7, 4))
            xs = range(len(r.by_turns))
            for i, (label, ys) in enumerate((("ours (engine.chat)", [t.decode_tps.median or 0 for t in r.by_turns]),
                                             ("bare forward loop", [t.bare_decode_tps.median or 0 for t in r.by_turns]),
                                             ("ceiling: bandwidth / bytes", [t.ceiling.decode_tps for t in r.by_turns]))):
                ax.bar([x + (i - 1) * 0.25 for x in xs], ys, 0.25, label=label)
            ax.set_xticks(list(xs), [f"{t.turns} turns" for t in r.by_turns])
            ax.set(ylabel="decode tokens/s", title=f"Chat decode speed vs ceiling, {r.tag}")
            ax.legend(fontsize=8)
            name = f"chat-{r.tag}.png"
        elif r.bench == "startup" and not r.name.endswith(("avx2.json", "avx512.json")):
            fig, ax = plt.subplots(figsize=(7, 3.6))
            for i, run in enumerate(r.runs):
                ax.plot([t for t, _ in run["timeline"]], [b / 2**30 for _, b in run["timeline"]], label=f"start-up {i + 1}")
            ax.axhline(r.weight_bytes_fp32 / 2**30, ls="--", c="gray", label="FP32 weight bytes")
            ax.set(xlabel="s since process start", ylabel="RSS, GiB", title=f"Start-up memory, {r.tag}")
            ax.legend(fontsize=8)
            name = f"startup-rss-{r.tag}.png"
        else:
            continue
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        made.append(out_dir / name)
    return made
