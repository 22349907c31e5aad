"""The engine's settings: one typed object, read from environment variables and overrides."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import prompts
from .errors import UserInputError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = PROJECT_ROOT / "weights" / "Qwen1.5-0.5B-Chat"


def _setting(default: Any, env: str, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Everything the engine can be told; each field's env var and meaning are in its metadata."""

    model_dir: Path = _setting(
        DEFAULT_MODEL_DIR, "MODEL_DIR",
        "Folder with the FP32 Hugging Face model (config, tokenizer, safetensors). "
        "Relative paths are taken from the current directory.")
    threads: int | None = _setting(
        None, "TORCH_THREADS",
        "torch intra-op threads. Unset: the container's CPU quota (cgroup), else the usable cores.")
    max_input_tokens: int = _setting(
        1024, "MAX_INPUT_TOKENS",
        "Longest text accepted for sentiment or as one chat message, in tokens.")
    chat_max_new_tokens: int = _setting(
        512, "CHAT_MAX_NEW_TOKENS", "Most tokens one chat reply may generate.")
    history_token_budget: int = _setting(
        2048, "HISTORY_TOKEN_BUDGET",
        "Tokens of conversation (history plus the new message) sent to the model; "
        "older turns are dropped first.")
    do_sample: bool | None = _setting(
        None, "CHAT_DO_SAMPLE", "Sample chat replies (true) or decode greedily. Unset: the model's generation_config.")
    temperature: float | None = _setting(
        None, "CHAT_TEMPERATURE", "Sampling temperature. Unset: the model's generation_config.")
    top_p: float | None = _setting(
        None, "CHAT_TOP_P", "Nucleus sampling mass. Unset: the model's generation_config.")
    top_k: int | None = _setting(
        None, "CHAT_TOP_K", "Top-k sampling cut-off. Unset: the model's generation_config.")
    repetition_penalty: float | None = _setting(
        None, "CHAT_REPETITION_PENALTY", "Repetition penalty. Unset: the model's generation_config.")
    pack_weights: bool = _setting(
        True, "PACK_WEIGHTS",
        "Keep the linear layers' FP32 weights in oneDNN's packed layout (same values, faster kernels: "
        "bench/README.md has the figures). Costs a few seconds at start-up; with tied embeddings "
        "(Qwen2.5) the packed output head is a second copy of the embedding.")
    sentiment_system_prompt: str = _setting(
        prompts.SENTIMENT_SYSTEM_PROMPT, "SENTIMENT_SYSTEM_PROMPT", "System prompt of the sentiment role.")
    sentiment_uncertain_below: float | None = _setting(
        None, "SENTIMENT_UNCERTAIN_BELOW",
        "Confidence (0.5-1) under which a label is flagged uncertain. Unset: the prompt's own threshold, "
        "chosen on the dev split (pipeline/prompts.py).")
    chat_system_prompt: str = _setting(
        prompts.CHAT_SYSTEM_PROMPT, "CHAT_SYSTEM_PROMPT", "System prompt of the chat role.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dir", Path(self.model_dir).expanduser())
        for name in ("max_input_tokens", "chat_max_new_tokens", "history_token_budget"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.sentiment_uncertain_below is not None and not 0.5 <= self.sentiment_uncertain_below <= 1:
            raise UserInputError(f"sentiment_uncertain_below must be between 0.5 and 1, got {self.sentiment_uncertain_below}")
        if self.threads is not None and self.threads < 1:
            raise UserInputError(f"threads must be at least 1, got {self.threads}")
        if self.history_token_budget < self.max_input_tokens:
            raise UserInputError(
                f"history_token_budget ({self.history_token_budget}) must be at least "
                f"max_input_tokens ({self.max_input_tokens}): the newest message always fits")

    @property
    def sentiment_prompt(self) -> prompts.SentimentPrompt:
        """The sentiment layout, with this system prompt and uncertain threshold."""
        prompt = dataclasses.replace(prompts.SENTIMENT_PROMPT, system=self.sentiment_system_prompt)
        if self.sentiment_uncertain_below is not None:
            prompt = dataclasses.replace(prompt, uncertain_below=self.sentiment_uncertain_below)
        return prompt

    @property
    def torch_threads(self) -> int:
        """Threads torch should use: the setting, else the CPU quota."""
        return self.threads or cpu_quota()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Settings from env vars (MODEL_DIR, TORCH_THREADS, ...); overrides that are not None win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is not None and raw.strip() != "":
                values[f.name] = _parse(f, raw.strip())
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str]]:
        """(field, env var, default, meaning) for each setting: the documentation table's rows."""
        rows = []
        for f in dataclasses.fields(cls):
            default = f.default
            if isinstance(default, Path):
                default = os.path.relpath(default, PROJECT_ROOT)
            rows.append((f.name, f.metadata["env"], "unset" if default is None else str(default), f.metadata["doc"]))
        return rows


def _parse(f: dataclasses.Field, raw: str) -> Any:
    kind = str(f.type)
    try:
        if "bool" in kind:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            return float(raw)
        if "Path" in kind:
            return Path(raw)
        return raw
    except ValueError:
        raise UserInputError(f"{f.metadata['env']}={raw!r} is not a valid {kind}") from None


def cpu_quota() -> int:
    """CPUs this process may really use: the cgroup CPU quota when set, else the affinity mask."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def markdown_table() -> str:
    """The settings as a Markdown table; the README carries exactly this (tests/test_readme.py checks)."""
    lines = ["| setting | env var | default | meaning |", "|---|---|---|---|"]
    for name, env, default, doc in Settings.describe():
        if name.endswith("_prompt"):
            default = "see `pipeline/prompts.py`"
        else:
            default = f"`{default}`"
        lines.append(f"| `{name}` | `{env}` | {default} | {doc} |")
    return "\n".join(lines)
