"""oneDNN-packed linear layers: the same FP32 weights, stored in the layout oneDNN's kernels read fastest."""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import mmap
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# oneDNN and PyTorch's ideep layer each keep an LRU cache of compiled kernels keyed by shape, 1024
# entries by default, and every new prompt length adds entries, so a long-running server grows without
# bound (bench/README.md has the measurement). One forward uses about six shapes, so 32 keeps every hit
# that counts, and a miss costs a fraction of a millisecond.
KERNEL_CACHE_CAPACITY = "32"
# oneDNN's primitive cache, and ideep's cache of primitive descriptors.
KERNEL_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")

# Row count the packed layout is tuned for. One layout serves chat decoding (1 row), sentiment (tens of
# rows) and chat prefill (hundreds): the hint was measured not to matter at any size (bench/README.md).
BATCH_HINT = 64


class PackedLinear(nn.Module):
    """A frozen nn.Linear whose weight lives in oneDNN's blocked layout; FP32 in, FP32 out."""

    def __init__(self, linear: nn.Linear, batch_hint: int = BATCH_HINT):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # A plain attribute, not a parameter: oneDNN tensors have no strides, which state_dict,
        # .to() and parameter counting would trip over. The dense weight is not kept.
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def rows(self, ids) -> torch.Tensor:
        """Dense copies of some rows of the weight (unpacks the whole weight once, briefly)."""
        return self.packed_weight.to_dense()[ids].clone()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def configure_onednn() -> None:
    """Cap oneDNN's kernel caches at KERNEL_CACHE_CAPACITY entries unless the environment already sets them."""
    # Each variable is read once, when oneDNN first builds a kernel in this process (not when torch is
    # imported), so this has to run before the first packed layer, the self-check's included.
    for variable in KERNEL_CACHE_VARIABLES:
        os.environ.setdefault(variable, KERNEL_CACHE_CAPACITY)


@dataclass(frozen=True)
class PackingCheck:
    """The self-check's verdict on packed linears in this process, and why."""

    available: bool
    reason: str


# A small layer with a bias, and the row counts the engine runs: one (decoding), several (a review),
# and the model's 3-D (batch, tokens, features) input.
_CHECK_FEATURES = (64, 48)
_CHECK_SHAPES = ((1, 64), (7, 64), (1, 5, 64))


@functools.lru_cache(maxsize=1)
def packing_check() -> PackingCheck:
    """Whether packed linears work in this process, and why; runs the self-check once, on first use."""
    try:
        verdict = _self_check()
    except Exception as error:  # noqa: BLE001 - whatever the private ops raise (missing, unsupported CPU) rules them out
        first_line = next(iter(str(error).strip().splitlines()), "")
        verdict = PackingCheck(False, f"packed linear raised {type(error).__name__}: {first_line}"[:300])
    if not verdict.available:
        log.info("oneDNN packing not used, weights stay in torch's layout: %s", verdict.reason)
    return verdict


def _self_check() -> PackingCheck:
    """Pack a small seeded FP32 layer, run it on the check's inputs and compare with F.linear."""
    generator = torch.Generator().manual_seed(0)  # its own generator: torch's global RNG is left alone
    in_features, out_features = _CHECK_FEATURES
    linear = nn.utils.skip_init(nn.Linear, in_features, out_features)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(out_features, in_features, generator=generator) / in_features**0.5)
        linear.bias.copy_(torch.randn(out_features, generator=generator))
    packed = PackedLinear(linear)
    with torch.inference_mode():
        for shape in _CHECK_SHAPES:
            x = torch.randn(*shape, generator=generator)
            got, expected = packed(x), F.linear(x, linear.weight, linear.bias)
            if got.shape != expected.shape or got.dtype != expected.dtype:
                return PackingCheck(False, f"packed linear gave {tuple(got.shape)} {got.dtype} on input {shape}, "
                                           f"F.linear {tuple(expected.shape)} {expected.dtype}")
            # FP32 arithmetic misses F.linear by under 1e-6 here and BF16 by about 1e-2, so the
            # tolerance also rules out oneDNN quietly running FP32 in reduced precision.
            if not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
                error = (got - expected).abs().max().item()
                return PackingCheck(False, f"packed linear differs from F.linear by up to {error:.3g} on input {shape}")
    shapes = ", ".join("x".join(map(str, shape)) for shape in _CHECK_SHAPES)
    return PackingCheck(True, f"packed FP32 linear matches F.linear on inputs {shapes}")


@dataclass(frozen=True)
class PackingProbe:
    """How many times faster the packed kernel ran than F.linear at each row count timed, and the times."""

    speedup: dict[int, float]
    measured: str

    def weighted(self, one_row_share: float) -> float:
        """The speed-up of a mix spending one_row_share of F.linear's time at 1 row, the rest at the most rows."""
        many = self.speedup[max(self.speedup)]
        return 1 / (one_row_share / self.speedup[1] + (1 - one_row_share) / many)


def packing_gain(weights: list[torch.Tensor], rows=(1, 32), reps: int = 5) -> PackingProbe:
    """Time the packed kernel against F.linear on these weights at each row count (1 must be one of them).

    Each timing runs every weight in turn, as a forward does: with more weights than the CPU's cache
    holds, they stream from memory as in decoding (one weight alone would sit in cache and mislead).
    Best of reps each, so a noisy neighbour cannot make either look faster than it is; the two kernels
    take turns rep by rep, so a burst of load slows both rather than one.
    """
    dense = [w.detach() for w in weights]
    packed = []
    for w in dense:
        linear = nn.utils.skip_init(nn.Linear, w.shape[1], w.shape[0], bias=False)
        linear.weight.data = w
        packed.append(PackedLinear(linear))
    kernels = {"packed": lambda x: [p(x) for p in packed], "F.linear": lambda x: [F.linear(x, w) for w in dense]}
    speedup, times = {}, []
    with torch.inference_mode():
        for count in rows:
            x = torch.randn(count, dense[0].shape[1])
            for run in kernels.values():
                run(x)  # warm-up: kernel creation
            best = {name: math.inf for name in kernels}
            for rep in range(reps):
                for name in (list(kernels) if rep % 2 == 0 else list(kernels)[::-1]):
                    best[name] = min(best[name], _seconds(kernels[name], x))
            speedup[count] = best["F.linear"] / best["packed"]
            times.append(f"{count} row{'s' if count > 1 else ''}: packed {best['packed'] * 1e3:.1f} ms, "
                         f"F.linear {best['F.linear'] * 1e3:.1f} ms")
    return PackingProbe(speedup, "; ".join(times))


def _seconds(fn, x: torch.Tensor) -> float:
    started = time.perf_counter()
    fn(x)
    return time.perf_counter() - started


def packing_available() -> bool:
    """Whether packed linears passed the self-check in this process (see packing_check)."""
    return packing_check().available


def pack_decoder_linears(model: nn.Module) -> int:
    """Swap every FP32 nn.Linear inside the decoder layers for a PackedLinear; returns how many."""
    if not packing_available():  # the self-check logged why
        return 0
    count = 0
    file_maps = _file_mappings()
    for layer in model.base_model.layers:
        for name, module in list(layer.named_modules()):
            if type(module) is nn.Linear and module.weight.dtype == torch.float32:
                parent_name, _, attr = name.rpartition(".")
                parent = layer.get_submodule(parent_name) if parent_name else layer
                setattr(parent, attr, PackedLinear(module))
                release_file_pages(module.weight, file_maps)
                count += 1
    return count


def _file_mappings() -> list[tuple[int, int]]:
    """(start, end) of this process's memory mappings backed by a file (Linux; empty elsewhere)."""
    if not sys.platform.startswith("linux"):
        return []
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if len(fields) >= 6 and fields[5].startswith("/") and not fields[5].startswith("/dev/"):
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    ranges.append((start, end))
    except OSError:
        return []
    return ranges


def release_file_pages(weight: torch.Tensor, file_maps: list[tuple[int, int]]) -> bool:
    """Drop this process's resident pages of a dense weight that was just packed and is no longer used.

    transformers maps safetensors files into memory, so a loaded weight is a view of the file and its
    pages stay resident (counted in RSS) while any weight of that file lives, even once packed. Only
    whole pages inside a file mapping are dropped: anything else there reads back from the file if
    touched again. Memory torch allocated itself is left alone (it is freed when the weight is).
    """
    if not file_maps or weight.is_mkldnn or not weight.is_contiguous():
        return False
    start = weight.data_ptr()
    end = start + weight.numel() * weight.element_size()
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, end // page * page
    if hi <= lo or not any(a <= lo and hi <= b for a, b in file_maps):
        return False
    return _madvise()(lo, hi - lo, 4) == 0  # 4: MADV_DONTNEED


@functools.lru_cache(maxsize=1)
def _madvise():
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return madvise


def pack_output_head(model: nn.Module) -> bool:
    """Swap the output head for a PackedLinear; returns whether it was packed.

    Decoding reads the whole head once per token, so it gains as much as the layers do. With tied
    embeddings the dense weight stays as the input embedding and the packed copy costs its size again.
    """
    head = model.get_output_embeddings()
    if not packing_available() or type(head) is not nn.Linear or head.weight.dtype != torch.float32:
        return False
    model.set_output_embeddings(PackedLinear(head))
    if head.weight is not model.get_input_embeddings().weight:  # a tied weight is still the embedding
        release_file_pages(head.weight, _file_mappings())
    return True


def head_rows(head: nn.Module, ids) -> torch.Tensor:
    """Dense rows of an output head, packed or not."""
    if isinstance(head, PackedLinear):
        return head.rows(ids)
    return head.weight[ids].detach().clone()
