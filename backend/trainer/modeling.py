"""Loading base models for training, saving trained model dirs, and loading them back for inference."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from backend.trainer.base_models import ResolvedBaseModel, resolve_base_model
from backend.trainer.spec import TrainingError

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

MODEL_META = "ftpipe_model.json"
LORA_R = 8
LORA_ALPHA = 16


@dataclass
class LoadedModel:
    """A model ready for training or inference together with its tokenizer and metadata."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    base: ResolvedBaseModel
    use_lora: bool


def _load_hf(
    path: Path, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TrainingError("model_not_available", f"Cannot load model from {path}: {exc}", "model") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_for_training(base: ResolvedBaseModel, frozen_dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a base model; built-ins are fully fine-tuned, foreign HF models get a LoRA adapter.

    `frozen_dtype` is the dtype of a LoRA model's frozen base weights (bf16 when training runs under bf16
    autocast: half the memory, no per-step cast); the adapter's trainable weights are always fp32.
    """
    model, tokenizer = _load_hf(base.path, frozen_dtype if base.use_lora else torch.float32)
    if base.use_lora:
        config = LoraConfig(
            r=LORA_R,
            lora_alpha=LORA_ALPHA,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, config)
        return LoadedModel(peft_model, tokenizer, base, True)
    return LoadedModel(model, tokenizer, base, False)


def save_model_dir(loaded: LoadedModel, out: Path) -> None:
    """Write weights (full model or LoRA adapter), tokenizer and a small json describing the base."""
    out.mkdir(parents=True, exist_ok=True)
    model: Any = loaded.model
    model.save_pretrained(str(out), safe_serialization=True)
    loaded.tokenizer.save_pretrained(str(out))
    meta = {
        "kind": "lora" if loaded.use_lora else "full",
        "base_model": loaded.base.name,
        "base_model_path": str(loaded.base.path),
        "max_seq_len": loaded.base.max_seq_len,
    }
    (out / MODEL_META).write_text(json.dumps(meta, indent=2))


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load the trainable parameters a resumable state holds; every trainable parameter must be present."""
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    if missing:
        raise TrainingError("resume_failed", f"Resumable state lacks parameters: {missing[:3]}", None)
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def load_for_inference(model_ref: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, int]:
    """Load a base model name or a directory written by `save_model_dir` (LoRA merged for speed)."""
    ref = str(model_ref)
    if ref.startswith("local:"):
        base = resolve_base_model(ref)
        model, tokenizer = _load_hf(base.path)
        return model.eval(), tokenizer, base.max_seq_len
    path = Path(ref)
    meta_file = path / MODEL_META
    if not meta_file.is_file():
        raise TrainingError(
            "model_not_found", f"{path} is not a model directory produced by the trainer", "model"
        )
    meta = json.loads(meta_file.read_text())
    max_len = int(meta.get("max_seq_len") or 1024)
    if meta["kind"] == "lora":
        base_model, _ = _load_hf(Path(meta["base_model_path"]))
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        merged = PeftModel.from_pretrained(base_model, str(path)).merge_and_unload()
        return merged.eval(), tokenizer, max_len
    model, tokenizer = _load_hf(path)
    return model.eval(), tokenizer, max_len
