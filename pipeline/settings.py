"""The engine's settings: one typed object, read from environment variables and overrides."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

from . import prompts
from .config import PROJECT_ROOT, EnvSettings, setting
from .errors import UserInputError

__all__ = ["DEFAULT_MODEL_DIR", "PROJECT_ROOT", "Settings", "cpu_quota"]

DEFAULT_MODEL_DIR = PROJECT_ROOT / "weights" / "Qwen1.5-0.5B-Chat"
_SEE_PROMPTS = "see `pipeline/prompts.py`"  # the prompts are too long for a table cell


@dataclass(frozen=True)
class Settings(EnvSettings):
    """Everything the engine can be told; each field's env var, flag and meaning are in its metadata."""

    model_dir: Path = setting(
        DEFAULT_MODEL_DIR, "MODEL_DIR",
        "Folder with the FP32 Hugging Face model (config, tokenizer, safetensors). "
        "Relative paths are taken from the current directory.", flag="--model-dir")
    threads: int | None = setting(
        None, "TORCH_THREADS",
        "torch intra-op threads. Unset: the container's CPU quota (cgroup), else the usable cores.")
    max_input_tokens: int = setting(
        1024, "MAX_INPUT_TOKENS",
        "Longest text accepted for sentiment or as one chat message, in tokens.")
    chat_max_new_tokens: int = setting(
        512, "CHAT_MAX_NEW_TOKENS", "Most tokens one chat reply may generate.")
    history_token_budget: int = setting(
        2048, "HISTORY_TOKEN_BUDGET",
        "Tokens of conversation (history plus the new message) sent to the model; "
        "older turns are dropped first.")
    kv_cache_mb: float = setting(
        256, "KV_CACHE_MB",
        "Memory for the KV caches of recent conversations and of the reply running, so a new turn reads only "
        "what the model has not seen (found by token prefix; least recently used dropped first). "
        "Qwen1.5-0.5B's FP32 KV is 0.19 MB per token: 256 MB holds about 1,300 tokens, and a longer "
        "conversation is read in full each turn. 0: no reuse.")
    chat_stop_loop_tokens: int = setting(
        48, "CHAT_STOP_LOOP_TOKENS",
        "End a reply that repeats one phrase: once its last N tokens (and at least 4 copies of the phrase) "
        "are the same phrase over and over. 0: never.")
    sentiment_batch_size: int = setting(
        8, "SENTIMENT_BATCH_SIZE",
        "Most reviews read in one forward by the batch tab and /api/classify (reviews of similar length go "
        "together, and a slice also holds at most 512 review tokens). bench/README.md has the curve.")
    batch_max_texts: int = setting(
        5000, "BATCH_MAX_TEXTS", "Most texts in one batch (a file on the batch tab, or one /api/classify call).")
    do_sample: bool | None = setting(
        None, "CHAT_DO_SAMPLE", "Sample chat replies (true) or decode greedily. Unset: the model's generation_config.")
    temperature: float | None = setting(
        None, "CHAT_TEMPERATURE", "Sampling temperature. Unset: the model's generation_config.")
    top_p: float | None = setting(
        None, "CHAT_TOP_P", "Nucleus sampling mass. Unset: the model's generation_config.")
    top_k: int | None = setting(
        None, "CHAT_TOP_K", "Top-k sampling cut-off. Unset: the model's generation_config.")
    repetition_penalty: float | None = setting(
        None, "CHAT_REPETITION_PENALTY", "Repetition penalty. Unset: the model's generation_config.")
    pack_weights: bool | None = setting(
        None, "PACK_WEIGHTS",
        "Keep the linear layers' FP32 weights in oneDNN's packed layout (same values; faster kernels on "
        "some CPUs, slower on others: bench/README.md has the figures), if its self-check at load passes. "
        "Unset: only if a quick measurement at load (ten layers' weights, 1 and 32 rows) finds it at least "
        "1.05x as fast as torch's F.linear with 85% of the time at 1 row, as in chat decoding; the output "
        "head (one row only) is packed only if faster at 1 row. The load line and /healthz say which and why. "
        "Packing costs about 0.6 s at start-up here; with tied embeddings the packed output head is a second "
        "copy of the embedding.")
    sentiment_system_prompt: str = setting(
        prompts.SENTIMENT_SYSTEM_PROMPT, "SENTIMENT_SYSTEM_PROMPT", "System prompt of the sentiment role. A changed one is calibrated once, at its first start "
        "(about 80 s on two cores; pipeline/calibration.py).",
        shown=_SEE_PROMPTS)
    sentiment_uncertain_below: float | None = setting(
        None, "SENTIMENT_UNCERTAIN_BELOW",
        "Confidence (0.5-1) under which a label is flagged uncertain. Unset: the prompt's own threshold, "
        "chosen on the dev split (pipeline/prompts.py).")
    chat_system_prompt: str = setting(
        prompts.CHAT_SYSTEM_PROMPT, "CHAT_SYSTEM_PROMPT", "System prompt of the chat role.", shown=_SEE_PROMPTS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dir", Path(self.model_dir).expanduser())
        for name in ("max_input_tokens", "chat_max_new_tokens", "history_token_budget", "sentiment_batch_size",
                     "batch_max_texts"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.sentiment_uncertain_below is not None and not 0.5 <= self.sentiment_uncertain_below <= 1:
            raise UserInputError(f"sentiment_uncertain_below must be between 0.5 and 1, got {self.sentiment_uncertain_below}")
        if self.kv_cache_mb < 0:
            raise UserInputError(f"kv_cache_mb must be 0 or more, got {self.kv_cache_mb}")
        if self.chat_stop_loop_tokens < 0:
            raise UserInputError(f"chat_stop_loop_tokens must be 0 or more, got {self.chat_stop_loop_tokens}")
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

