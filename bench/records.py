"""The result files as typed records: what bench/report.py reads, by name, from bench/results/*.json.

Each record names only the fields the report uses; a file may carry more (they are ignored), and a field
it lacks takes the default, so an older or newer file still reads. `read(cls, data)` builds any record
here from a JSON object, nested records, lists and dicts of records included.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union


def read(cls, data: Any):
    """A `cls` from parsed JSON: a dataclass field by field (extra keys ignored), list[X] and dict[str, X] item by item."""
    if data is None:
        return None
    origin, args = typing.get_origin(cls), typing.get_args(cls)
    if origin in (Union, types.UnionType):
        return read(next(a for a in args if a is not type(None)), data)
    if origin is list:
        return [read(args[0], x) for x in data]
    if origin is dict:
        return {k: read(args[1], v) for k, v in data.items()}
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: read(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data})
    return data


@dataclass
class Stats:
    n: int = 0
    median: Optional[float] = None
    max: Optional[float] = None


@dataclass
class Model:
    tag: str = "?"
    kind: str = "?"
    shape: Optional[str] = None


@dataclass
class Provenance:
    when: str = ""
    git_head: Optional[str] = None
    prompts_commit: Optional[str] = None
    model: Model = field(default_factory=Model)
    cpu_isa_flags: list[str] = field(default_factory=list)
    isa_caps: dict[str, str] = field(default_factory=dict)

    @property
    def isa(self) -> str:
        """AVX2 when the run capped the kernels to it (or the CPU has no AVX-512), else AVX-512."""
        if self.isa_caps.get("ATEN_CPU_CAPABILITY", "").lower() == "avx2":
            return "AVX2"
        return "AVX-512" if "avx512f" in self.cpu_isa_flags else "AVX2"


@dataclass
class CpuShare:
    others: Optional[float] = None


@dataclass
class Result:
    """What every result file has; `path` is set by `load`."""
    bench: str = ""
    provenance: Provenance = field(default_factory=Provenance)
    cpu_share: Optional[CpuShare] = None
    path: Path = Path("?")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def tag(self) -> str:
        return self.provenance.model.tag


@dataclass
class Metrics:
    accuracy: Optional[float] = None
    unparsed: int = 0
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class Method:
    latency_ms: Stats = field(default_factory=Stats)
    metrics: Optional[Metrics] = None
    calibration: Optional[dict[str, Any]] = None
    uncertain: Optional[dict[str, Any]] = None
    # injection
    holds: Optional[float] = None
    holds_seen: Optional[float] = None
    holds_unseen: Optional[float] = None


@dataclass
class Floor:
    floor_ms: Stats = field(default_factory=Stats)
    ours_over_floor: Stats = field(default_factory=Stats)


@dataclass
class Sentiment(Result):
    split: dict[str, int] = field(default_factory=dict)
    methods: dict[str, Method] = field(default_factory=dict)
    floor: Optional[Floor] = None
    speedup: dict[str, Any] = field(default_factory=dict)
    reviewed: Optional[dict[str, Any]] = None
    items: list[dict[str, Any]] = field(default_factory=list)
    accuracy_meaningless: Optional[str] = None

    @property
    def n(self) -> int:
        return self.split.get("items_run", 0)


@dataclass
class Family:
    seen: bool = False
    templates: list[Any] = field(default_factory=list)


@dataclass
class Injection(Result):
    methods: dict[str, Method] = field(default_factory=dict)
    families: dict[str, Family] = field(default_factory=dict)
    bases: list[Any] = field(default_factory=list)
    accuracy_meaningless: Optional[str] = None


@dataclass
class Ceiling:
    ttft_floor_ms: float = 0.0
    decode_tps: float = 0.0
    decode_tps_at_gemv_rate: Optional[float] = None
    gemv_gbs: Optional[float] = None


@dataclass
class Turns:
    turns: int = 0
    prompt_tokens: int = 0
    ttft_ms: Stats = field(default_factory=Stats)
    decode_tps: Stats = field(default_factory=Stats)
    bare_decode_tps: Stats = field(default_factory=Stats)
    decode_fraction_of_ceiling: Optional[float] = None
    ceiling: Ceiling = field(default_factory=Ceiling)


@dataclass
class ConversationTurn:
    turn: int = 0
    first_token_ms: float = 0.0


@dataclass
class Chat(Result):
    by_turns: list[Turns] = field(default_factory=list)
    conversation: Optional[dict[str, list[ConversationTurn]]] = None


@dataclass
class Context:
    context: int = 0
    step_ms: dict[str, Stats] = field(default_factory=dict)
    growing_speedup: float = 0.0
    same_logits: bool = False


@dataclass
class KvAppend(Result):
    by_context: list[Context] = field(default_factory=list)


@dataclass
class Packing(Result):
    median_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    packed_speedup: dict[str, float] = field(default_factory=dict)
    weighted_packed_speedup: float = 0.0
    app_linear_path: str = ""

    @property
    def chosen(self) -> str:
        return self.app_linear_path.split(" (")[0]


@dataclass
class StartupLimit:
    ready_s: float = 0.0
    import_s: float = 0.0
    read_weights_s: float = 0.0


@dataclass
class Startup(Result):
    worst_case: bool = False
    ready_s: Stats = field(default_factory=Stats)
    limit: Optional[StartupLimit] = None
    weight_bytes_fp32: int = 0
    peak_rss_loading: int = 0
    peak_rss_serving: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Level:
    clients: int = 0
    throughput_rps: Optional[float] = None
    p50_ms: Optional[float] = None
    p95_ms: Optional[float] = None
    errors: int = 0
    throughput_vs_single: Optional[float] = None
    server_model_ms: Stats = field(default_factory=Stats)


@dataclass
class Concurrency(Result):
    mode: str = ""
    levels: list[Level] = field(default_factory=list)


@dataclass
class ChatWait:
    first_token_ms_during_batch: float = 0.0
    slice_ms: Stats = field(default_factory=Stats)


@dataclass
class Batch(Result):
    n: int = 0
    reviews_per_s: dict[str, float] = field(default_factory=dict)
    speedup_vs_one_by_one: float = 0.0
    speedup_vs_seed: Optional[float] = None
    share_of_flop_floor: Optional[float] = None
    same_labels: int = 0
    chat_wait: Optional[ChatWait] = None


@dataclass
class Layout:
    accuracy_calibrated: float = 0.0
    holds_given_clean_correct: Optional[float] = None
    holds_by_family: dict[str, float] = field(default_factory=dict)
    suffix_tokens: int = 0
    prefix_tokens: int = 0
    ms_per_clean_item: float = 0.0
    fit: Optional[dict[str, Any]] = None


@dataclass
class PromptRobust:
    """bench/results/prompt_robust.json: the sentiment layouts measured on the dev split."""
    n: int = 0
    bases: int = 0
    attack_items: list[Any] = field(default_factory=list)
    variants: dict[str, Layout] = field(default_factory=dict)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against a fair coin."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n)


def paired_comparison(items: list[dict]) -> dict | None:
    """Items only ours / only the seed got right, and whether that difference is more than chance."""
    both_ran = [x for x in items if "ours" in x and "seed" in x]
    if not both_ran:
        return None
    right = [(x["ours"]["label"] == x["gold"], x["seed"]["label"] == x["gold"]) for x in both_ran]
    b, c, both = (sum(o and not s for o, s in right), sum(s and not o for o, s in right), sum(o and s for o, s in right))
    return {"ours_only": b, "seed_only": c, "both": both, "neither": len(right) - b - c - both, "p": mcnemar_exact_p(b, c)}


RECORDS: dict[str, type[Result]] = {"sentiment": Sentiment, "injection": Injection, "chat": Chat, "kv_append": KvAppend,
                                    "packing": Packing, "startup": Startup, "concurrency": Concurrency, "batch": Batch}


def load(results_dir: Path) -> list[Result]:
    """Every result file of a known bench in results_dir, as its record (other tools' files may live there too)."""
    out = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("bench") in RECORDS:
            record = read(RECORDS[data["bench"]], data)
            record.path = path
            out.append(record)
    return out
