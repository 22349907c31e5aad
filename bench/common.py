"""What every benchmark shares: the command line, the model folder, the run's provenance, stats, JSON.

Every benchmark takes `--model-dir DIR` (real weights) or `--shape qwen1.5-0.5b|qwen2.5-0.5b|tiny`
(randomly initialised weights with that model's exact config, built once under --cache-dir; the
tokenizer is copied from the stand-in real model when it is present, so Chinese text tokenizes as it
would for the real model). Results are written as JSON to bench/results/ (or --out-dir).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

_LOADAVG_AT_IMPORT = os.getloadavg() if hasattr(os, "getloadavg") else None  # when the benchmark started
BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
REAL_MODEL_DEFAULT = Path.home() / ".cache" / "qwen-allinone" / "real-0.5b"
SYNTH_CACHE_DEFAULT = Path(os.environ.get("BENCH_CACHE_DIR", "/var/tmp/qwen-allinone-bench"))


# -- command line ---------------------------------------------------------------------------------

def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model-dir", type=Path, help="a Hugging Face model folder with real weights")
    src.add_argument("--shape", choices=("qwen1.5-0.5b", "qwen2.5-0.5b", "tiny"),
                     help="randomly initialised weights with this model's exact config (cost, not quality)")
    p.add_argument("--tokenizer-from", type=Path, default=None,
                   help="with --shape: copy this folder's tokenizer (default: REAL_MODEL_DIR or "
                        f"{REAL_MODEL_DEFAULT} when present, else a tiny trained one)")
    p.add_argument("--cache-dir", type=Path, default=SYNTH_CACHE_DEFAULT,
                   help="where --shape models are built (never inside the repository)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where the JSON result goes")
    p.add_argument("--tag", default=None, help="suffix for the result file name (default: the model's tag)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPU quota, as the app)")
    return p


def resolve_model_dir(args) -> tuple[Path, dict[str, Any]]:
    """(model folder, description) from --model-dir / --shape (default: REAL_MODEL_DIR, else the stand-in)."""
    if args.shape:
        tok = args.tokenizer_from
        if tok is None and args.shape != "tiny":
            env = os.environ.get("REAL_MODEL_DIR")
            for cand in ([Path(env)] if env else []) + [REAL_MODEL_DEFAULT]:
                if (cand / "tokenizer.json").is_file():
                    tok = cand
                    break
        dest = Path(args.cache_dir) / f"{args.shape}-{'realtok' if tok else 'tinytok'}"
        if not (dest / "synthetic.json").is_file():
            from pipeline.synthetic import build_model_dir

            print(f"building random {args.shape} weights in {dest} ...", file=sys.stderr, flush=True)
            build_model_dir(dest, shape=args.shape, tokenizer_from=tok)
        return dest, {"kind": "random", "shape": args.shape, "tokenizer_from": str(tok) if tok else None,
                      "dir": str(dest), "tag": f"{args.shape}-random"}
    model_dir = args.model_dir
    if model_dir is None:
        env = os.environ.get("REAL_MODEL_DIR")
        model_dir = Path(env) if env else REAL_MODEL_DEFAULT
    model_dir = Path(model_dir).expanduser()
    synthetic = model_dir / "synthetic.json"
    kind = "random" if synthetic.is_file() else "real"
    return model_dir, {"kind": kind, "shape": None, "dir": str(model_dir), "tag": model_dir.name}


def result_path(args, bench: str, model: dict[str, Any], variant: str | None = None) -> Path:
    tag = args.tag or model["tag"]
    name = "-".join(x for x in (bench, variant, tag) if x)
    return Path(args.out_dir) / f"{name}.json"


# -- provenance -----------------------------------------------------------------------------------

def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(model: dict[str, Any] | None = None, engine=None) -> dict[str, Any]:
    """Where and on what the numbers were measured: commit, prompts, machine, library versions."""
    import torch
    import transformers

    from pipeline import prompts

    prompt_text = json.dumps([prompts.SENTIMENT_SYSTEM_PROMPT, prompts.SEED_SYSTEM_PROMPT,
                              prompts.CHAT_SYSTEM_PROMPT, repr(prompts.SENTIMENT_PROMPT)], ensure_ascii=False)
    head = _git("rev-parse", "HEAD")
    if head is None and os.environ.get("BENCH_SOURCE_COMMIT"):
        # an exported tree (`git archive COMMIT`): the commit it came from, clean by construction
        head, prompts_commit, dirty = os.environ["BENCH_SOURCE_COMMIT"], os.environ.get("BENCH_PROMPTS_COMMIT"), ""
    else:
        prompts_commit = _git("log", "-1", "--format=%H", "--", "pipeline/prompts.py")
        dirty = _git("status", "--porcelain", "--", "pipeline", "app", "demo.py")  # the code a figure measures
    info = {
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_head": head,
        "prompts_commit": prompts_commit,
        "pipeline_dirty": bool(dirty),
        "prompts_sha256": hashlib.sha256(prompt_text.encode()).hexdigest()[:16],
        "sentiment_system_prompt": prompts.SENTIMENT_SYSTEM_PROMPT,
        "seed_system_prompt": prompts.SEED_SYSTEM_PROMPT,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "cpu_isa_flags": _cpu_isa_flags(),
        "isa_caps": {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")
                     if k in os.environ},
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_start": list(_LOADAVG_AT_IMPORT) if _LOADAVG_AT_IMPORT else None,
        "argv": sys.argv,
    }
    if model is not None:
        info["model"] = model
    if engine is not None:
        info["settings"] = {k: str(v) for k, v in vars(engine.settings).items()
                            if k not in ("sentiment_system_prompt", "chat_system_prompt")}
        info["linear_path"] = getattr(engine, "linear_path", None)  # packed or F.linear, and the probe's times
    return info


def _cpu_isa_flags() -> list[str]:
    """The vector-ISA flags /proc/cpuinfo lists (AVX2, AVX-512, AMX, ...): what the kernels may use."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma", "f16c", "sve", "asimd")))
    except OSError:
        pass
    return []


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_result(path: Path, result: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if "provenance" in result and hasattr(os, "getloadavg"):
        result["provenance"]["loadavg_end"] = list(os.getloadavg())
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}", file=sys.stderr)
    return path


# -- statistics -----------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation; None for no values."""
    xs = sorted(values)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: Iterable[float]) -> dict[str, Any]:
    xs = [float(v) for v in values]
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "median": statistics.median(xs), "p90": percentile(xs, 90),
            "p95": percentile(xs, 95), "mean": statistics.fmean(xs), "min": min(xs), "max": max(xs)}


class Deadline:
    """A time budget: `expired` once `seconds` have passed since creation."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.monotonic()

    @property
    def expired(self) -> bool:
        return time.monotonic() - self.start > self.seconds

    @property
    def left(self) -> float:
        return max(0.0, self.seconds - (time.monotonic() - self.start))


def load(model_dir: Path, threads: int | None = None, **overrides):
    """The engine, loaded exactly as the app loads it (threads from the CPU quota unless given)."""
    import logging

    import pipeline

    logging.getLogger("transformers").setLevel(logging.ERROR)
    return pipeline.load_engine(model_dir, threads=threads, **overrides)


class CpuShare:
    """How busy the machine was while a benchmark ran, and how much of that was other processes.

    Reads /proc/stat (all CPUs) and this process's own CPU time at start and at `stop()`. A figure
    measured while others' share is high is slower than the machine can do: say so next to it.
    """

    def __init__(self):
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        total = sum(fields[:8])
        t = os.times()
        return (total - idle) / hz, total / hz, t.user + t.system

    def stop(self) -> dict[str, float] | None:
        end = self._sample()
        if not end or not self._start:
            return None
        busy = end[0] - self._start[0]
        total = end[1] - self._start[1]
        mine = end[2] - self._start[2]
        if total <= 0:
            return None
        return {"machine_busy": busy / total, "this_process": min(mine, busy) / total,
                "others": max(0.0, busy - mine) / total}


def in_turn(items, i: int) -> list:
    """items in order on even i and reversed on odd i: which goes first alternates, so a change in the
    machine's load part-way through hits every contender alike."""
    items = list(items)
    return items if i % 2 == 0 else items[::-1]


def in_worker_thread(fn, *args, **kwargs):
    """fn(*args, **kwargs) in a fresh thread, as the app runs the engine (web-server worker threads).

    On this machine torch work measured a little slower on the main thread than on worker threads,
    so every timed section runs on one worker thread: ours, the seed method and the limits alike.
    """
    import threading

    box: dict[str, Any] = {}

    def run():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            box["error"] = exc

    t = threading.Thread(target=run, name="bench-worker")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]
