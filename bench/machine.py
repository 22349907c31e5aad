"""This machine's limits (FP32 matmul throughput, memory read bandwidth) and the model's cost per token.

A library of the benchmarks (bench.chat, bench.sentiment, bench.batch measure their floors and ceilings
with it, in their own run); it has no command of its own, as its figures are only quoted next to theirs.
The limits are measured with the same torch and threads as the benchmarks, in the same process, so a
floor or ceiling is comparable to the figure next to it.

What is counted (see `ModelCost`):
- FLOPs of a forward over T new tokens after P cached ones: 2 x (weights of the 24 layers' linear
  projections, biases included) per token, plus attention scores and values (4 x query width x keys
  attended, per layer per token), plus the lm_head (2 x hidden x vocab) only for the positions whose
  logits are kept (1: the engine and generate() both use logits_to_keep=1). Norms, RoPE, softmax and
  activations are left out (under 1%). The embedding is a lookup: no FLOPs.
- Bytes read per decoded token: every weight except the input embedding (a lookup reads one row), in
  FP32, lm_head included, plus the KV cache of the context (2 x layers x KV width x context x 4 bytes).
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.packing import PackedLinear, packing_available


@dataclass(frozen=True)
class ModelCost:
    """Parameter counts and per-token costs of one loaded model."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    params_total: int           # unique parameters
    params_embedding: int
    params_lm_head: int         # 0 extra when tied (the embedding matrix is reused)
    params_layers_linear: int   # q/k/v/o/gate/up/down weights and biases of all layers
    params_other: int           # norms

    @property
    def weight_bytes_fp32(self) -> int:
        return 4 * self.params_total

    @property
    def decode_weight_bytes(self) -> int:
        """FP32 bytes of every weight read for one decoded token (all but the embedding lookup)."""
        lm_head = self.vocab * self.hidden
        return 4 * (self.params_layers_linear + self.params_other + lm_head)

    def kv_bytes(self, context: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * context * 4

    def decode_bytes(self, context: int) -> int:
        return self.decode_weight_bytes + self.kv_bytes(context)

    def forward_flops(self, new_tokens: int, past: int = 0, logits_kept: int = 1) -> float:
        """FLOPs of one forward over new_tokens after past cached tokens (see the module's doc)."""
        t, p = new_tokens, past
        linear = 2.0 * self.params_layers_linear * t
        keys = t * p + t * (t + 1) / 2  # keys attended, summed over the new tokens (causal)
        attention = 4.0 * self.layers * self.heads * self.head_dim * keys
        lm_head = 2.0 * self.hidden * self.vocab * min(logits_kept, t)
        return linear + attention + lm_head

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(weight_bytes_fp32=self.weight_bytes_fp32, decode_weight_bytes=self.decode_weight_bytes,
                 kv_bytes_per_token=self.kv_bytes(1), flops_per_token_linear=2 * self.params_layers_linear)
        return d


def model_cost(model) -> ModelCost:
    """Counts from the loaded model, whether or not its linear layers are packed (pipeline.packing)."""
    cfg = model.config
    emb = model.get_input_embeddings().weight
    head_module = model.get_output_embeddings()
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    if isinstance(head_module, PackedLinear):  # a packed head is its own copy even when the model ties it
        tied, head_numel = bool(getattr(cfg, "tie_word_embeddings", False)), head_module.packed_weight.numel()
        total += 0 if tied else head_numel  # packed weights are not parameters
    else:
        tied, head_numel = head_module.weight.data_ptr() == emb.data_ptr(), head_module.weight.numel()
    linear = other = 0
    for name, p in model.model.layers.named_parameters():
        if p.dim() == 2 or name.endswith(".bias"):
            linear += p.numel()
        else:
            other += p.numel()
    packed = sum(m.packed_weight.numel() for m in model.model.layers.modules() if isinstance(m, PackedLinear))
    linear += packed
    total += packed
    other += sum(p.numel() for p in model.model.norm.parameters())
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return ModelCost(
        layers=cfg.num_hidden_layers, hidden=cfg.hidden_size, intermediate=cfg.intermediate_size, heads=heads,
        kv_heads=cfg.num_key_value_heads, head_dim=head_dim, vocab=emb.shape[0], tied=tied,
        params_total=total, params_embedding=emb.numel(), params_lm_head=0 if tied else head_numel,
        params_layers_linear=linear, params_other=other)


def _rates(amount: float, times: list[float], unit: str) -> dict[str, Any]:
    """best_<unit> and median_<unit> (amount per second, in billions) over timed runs, and how many."""
    return {f"best_{unit}": amount / min(times) / 1e9, f"median_{unit}": amount / statistics.median(times) / 1e9,
            "reps": len(times)}


def _time(fn, min_seconds: float, max_reps: int) -> list[float]:
    fn()  # warm-up
    times, start = [], time.perf_counter()
    while len(times) < max_reps and (len(times) < 3 or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def linear_kernels(w: torch.Tensor) -> dict[str, Any]:
    """The FP32 linear kernels this torch offers for weight w: torch's F.linear (a stock nn.Linear), and
    the oneDNN-packed one that the engine uses (pipeline.packing) where this build has it."""
    kernels = {"F.linear": lambda x: F.linear(x, w)}
    if packing_available():
        linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        linear.weight.data = w
        kernels["onednn_packed"] = PackedLinear(linear)
    return kernels


def measure_matmul(hidden: int, out_features: int, tokens=(1, 8, 16, 32, 64, 128, 256, 512),
                   min_seconds: float = 0.4, max_reps: int = 200) -> dict[str, Any]:
    """FP32 GFLOP/s of x[T, hidden] @ W[out, hidden]^T for each T, with each kernel torch offers here
    (F.linear, as a stock nn.Linear runs; oneDNN-packed, as the engine runs); best_gflops is the best
    kernel's, since a floor should use the fastest arithmetic the machine can do."""
    torch.manual_seed(0)
    w = torch.randn(out_features, hidden)
    kernels = linear_kernels(w)
    rows = []
    with torch.inference_mode():
        for t in tokens:
            x = torch.randn(t, hidden)
            flops = 2.0 * t * hidden * out_features
            by_kernel = {}
            for name, fn in kernels.items():
                by_kernel[name] = _rates(flops, _time(lambda fn=fn, x=x: fn(x), min_seconds, max_reps), "gflops")
            best = max(by_kernel, key=lambda k: by_kernel[k]["best_gflops"])
            rows.append({"tokens": t, **by_kernel[best], "kernel": best, "by_kernel": by_kernel})
    peak = max(r["best_gflops"] for r in rows)
    return {"shape": f"[T x {hidden}] @ [{hidden} x {out_features}]", "by_tokens": rows, "peak_gflops": peak,
            "kernels": list(kernels), "threads": torch.get_num_threads()}


def matmul_gflops_at(matmul: dict[str, Any], tokens: int, key: str = "best_gflops") -> float:
    """Measured throughput at the nearest measured T (the larger one on ties)."""
    rows = matmul["by_tokens"]
    return min(rows, key=lambda r: (abs(r["tokens"] - tokens), -r["tokens"]))[key]


def measure_bandwidth(gib: float = 1.5, reps: int = 6) -> dict[str, Any]:
    """Memory read bandwidth: sum over a `gib` GiB FP32 tensor (far beyond any cache), best and median."""
    n = int(gib * 2**30 / 4)
    x = torch.ones(n, dtype=torch.float32)
    try:
        with torch.inference_mode():
            times = _time(x.sum, 0.0, reps)
    finally:
        del x
        gc.collect()
    nbytes = 4 * n
    return {"bytes": nbytes, **_rates(nbytes, times, "gbs"), "threads": torch.get_num_threads()}


def measure_gemv_bandwidth(hidden: int, out_features: int, gib: float = 1.0, reps: int = 6) -> dict[str, Any]:
    """Weight bytes streamed per second by a batch-1 linear (matrix-vector), cycling through enough
    [out x hidden] matrices (`gib` GiB) that none stays in cache: what a decode step can reach with
    each kernel (F.linear; oneDNN-packed where available), as opposed to the plain sum's read rate.
    best_gbs is the best kernel's."""
    per = out_features * hidden * 4
    count = max(2, int(gib * 2**30 // per))
    torch.manual_seed(0)
    ws = [torch.randn(out_features, hidden) for _ in range(count)]
    x = torch.randn(1, hidden)
    nbytes = per * count
    by_kernel = {}
    try:
        with torch.inference_mode():
            by_kernel["F.linear"] = _rates(nbytes, _time(lambda: [F.linear(x, w) for w in ws], 0.0, reps), "gbs")
            if packing_available():
                packed = [linear_kernels(w)["onednn_packed"] for w in ws]
                del ws
                by_kernel["onednn_packed"] = _rates(nbytes, _time(lambda: [f(x) for f in packed], 0.0, reps), "gbs")
                del packed
    finally:
        ws = packed = None
        gc.collect()
    best = max(by_kernel, key=lambda k: by_kernel[k]["best_gbs"])
    return {"bytes": nbytes, "matrices": count, **by_kernel[best], "kernel": best, "by_kernel": by_kernel}


def best_of(*runs: dict[str, Any]) -> dict[str, Any]:
    """Per measured size, the best of several measurements (a machine's limit is its best)."""
    runs = [r for r in runs if r]
    rows = [max(group, key=lambda r: r["best_gflops"]) for group in zip(*(r["matmul"]["by_tokens"] for r in runs))]
    bw = max((r["bandwidth"] for r in runs), key=lambda b: b["best_gbs"])
    out = {"matmul": {**runs[0]["matmul"], "by_tokens": rows, "peak_gflops": max(r["best_gflops"] for r in rows)},
           "bandwidth": bw, "measurements": len(runs)}
    gemv = [r["gemv_bandwidth"] for r in runs if r.get("gemv_bandwidth")]
    if gemv:
        out["gemv_bandwidth"] = max(gemv, key=lambda b: b["best_gbs"])
    return out


def measure(model, bandwidth_gib: float = 1.5, gemv: bool = False) -> dict[str, Any]:
    """Matmul throughput on the model's MLP shape, and memory read bandwidth, measured now
    (with gemv: also the bytes/s torch's batch-1 matrix-vector kernel streams)."""
    cost = model_cost(model)
    out = {"matmul": measure_matmul(cost.hidden, cost.intermediate), "bandwidth": measure_bandwidth(bandwidth_gib)}
    if gemv:
        out["gemv_bandwidth"] = measure_gemv_bandwidth(cost.hidden, cost.intermediate)
    return out
