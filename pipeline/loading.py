"""Loading the one model and its tokenizer from a local folder, in FP32, for inference only."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .errors import ModelCompatibilityError, WeightsNotFoundError
from .settings import Settings

log = logging.getLogger(__name__)

HOW_TO_GET_WEIGHTS = (
    "Get weights with `python -m pipeline.weights` (downloads Qwen/Qwen1.5-0.5B-Chat into weights/ as FP32), "
    "or `python -m pipeline.weights --from-dir DIR` to convert a folder you already have, with no network "
    "(see weights/README.md); or point MODEL_DIR / --model-dir at a Hugging Face model folder."
)
_TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def check_model_dir(model_dir: Path) -> None:
    """Raise WeightsNotFoundError naming the folder and what is missing, unless it can be loaded."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise WeightsNotFoundError(f"Model folder {model_dir} does not exist. {HOW_TO_GET_WEIGHTS}")
    missing = [name for name in ("config.json", "tokenizer_config.json") if not (model_dir / name).is_file()]
    if not any(all((model_dir / n).is_file() for n in names) for names in _TOKENIZER_FILES):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    missing += _missing_weight_files(model_dir)
    if missing:
        raise WeightsNotFoundError(
            f"Model folder {model_dir} is incomplete: missing {', '.join(missing)}. {HOW_TO_GET_WEIGHTS}")


def _missing_weight_files(model_dir: Path) -> list[str]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError):
            return [f"a readable {index.name}"]
        return sorted(s for s in shards if not (model_dir / s).is_file())
    if (model_dir / "model.safetensors").is_file() and (model_dir / "model.safetensors").stat().st_size > 0:
        return []
    return ["model.safetensors"]


def load_model(settings: Settings):
    """(model, tokenizer) from settings.model_dir: local files only, FP32, eval mode, no grads."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_dir(settings.model_dir)
    torch.set_num_threads(settings.torch_threads)
    log.info("loading %s with %d torch threads", settings.model_dir, settings.torch_threads)
    tokenizer = AutoTokenizer.from_pretrained(settings.model_dir, local_files_only=True)
    # transformers 5 keeps the checkpoint's dtype unless told: hub checkpoints are BF16, and this
    # CPU has no fast BF16, so ask for FP32 explicitly.
    model = AutoModelForCausalLM.from_pretrained(
        settings.model_dir, local_files_only=True, dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.chat_template is None:
        raise ModelCompatibilityError(f"Model folder {settings.model_dir} has no chat template in its tokenizer config.")
    return model, tokenizer
