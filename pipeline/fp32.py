"""One safetensors shard rewritten with its floating point tensors as FP32, one tensor in memory at a time."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
from pathlib import Path

_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_ITEMSIZE = {"F32": 4, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class WeightsError(Exception):
    """The weights cannot be fetched, converted or verified; the message says why and what to do."""


def convert_shard(src: Path, dst: Path) -> dict:
    """Write src's tensors to dst with floating point ones as FP32, one tensor in memory at a time."""
    import torch
    from safetensors import safe_open
    from tqdm import tqdm

    with safe_open(src, "pt") as f:
        header, names = fp32_header(f, src)
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # safetensors aligns the data to 8 bytes
        digest = hashlib.sha256()
        with open(dst, "wb") as out:
            for part in (struct.pack("<Q", len(blob)), blob):
                out.write(part)
                digest.update(part)
            for name in tqdm(names, desc=f"FP32 {src.name}", unit="tensor", file=sys.stderr):
                tensor = f.get_tensor(name)
                if tensor.is_floating_point():
                    tensor = tensor.to(torch.float32)
                data = memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
                out.write(data)
                digest.update(data)
                del tensor, data
    os.chmod(dst, 0o644)
    with safe_open(dst, "pt") as check:  # the file must read back as a safetensors file with the same tensors
        if sorted(check.keys()) != sorted(names):
            raise WeightsError(f"{dst} did not read back with the tensors of {src}")
    return {"sha256": digest.hexdigest(), "size": dst.stat().st_size}


def fp32_header(f, src: Path) -> tuple[dict, list[str]]:
    """The safetensors header src will have once converted (floating point tensors as F32), and its tensor names."""
    header, offset = {}, 0
    names = sorted(f.keys())
    for name in names:
        piece = f.get_slice(name)
        dtype, shape = piece.get_dtype(), list(piece.get_shape())
        dtype = "F32" if dtype in _FLOAT_DTYPES else dtype
        if dtype not in _ITEMSIZE:
            raise WeightsError(f"{src} holds tensor {name} as {piece.get_dtype()}, which this tool cannot convert "
                               "(quantized checkpoints are not supported).")
        size = math.prod(shape) * _ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {**(f.metadata() or {}), "format": "pt"}
    return header, names


def fp32_size(shard: Path, header_only: bool = False) -> int:
    """Bytes of shard once converted to FP32 (its tensors only, if header_only)."""
    from safetensors import safe_open

    with safe_open(shard, "pt") as f:
        header, _ = fp32_header(f, shard)
    data = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    return data if header_only else data + len(json.dumps(header)) + 16
