"""Built-in base models (built locally from a fixed seed, never downloaded) and base-model name resolution.

torch is imported only to build a model, so resolving names and reading tokenizers stays light.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from backend.trainer.spec import TrainingError
from backend.trainer.tokenizer import build_tokenizer

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

# Bump when the recipe changes so stale caches are rebuilt instead of reused.
BUILD_VERSION = "v1"
LOCAL_PREFIX = "local:"
CACHE_ENV = "FTPIPE_BASE_MODEL_CACHE"


@dataclass(frozen=True)
class BuiltinModelSpec:
    """Architecture and training defaults of one built-in model."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_seq_len: int
    base_learning_rate: float
    init_seed: int


BUILTIN_MODELS: dict[str, BuiltinModelSpec] = {
    # Sized so ~300 support dialogues x 3 epochs train in about a minute on 2 CPU cores.
    "local:tiny-chat": BuiltinModelSpec(
        hidden_size=256,
        num_layers=4,
        num_heads=4,
        intermediate_size=640,
        max_seq_len=512,
        base_learning_rate=2e-3,
        init_seed=1234,
    ),
    # For tests: a 20-example epoch takes well under a second.
    "local:micro-chat": BuiltinModelSpec(
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        intermediate_size=128,
        max_seq_len=256,
        base_learning_rate=3e-3,
        init_seed=4321,
    ),
}

# LoRA on arbitrary HF models: a conventional LoRA learning rate.
HF_LORA_LEARNING_RATE = 5e-4
HF_MAX_SEQ_LEN = 1024


@dataclass(frozen=True)
class ResolvedBaseModel:
    """A base model name turned into a directory on disk plus how to train it."""

    name: str
    path: Path
    kind: Literal["builtin", "hf"]
    use_lora: bool
    base_learning_rate: float
    max_seq_len: int


_build_lock = threading.Lock()


def default_cache_dir() -> Path:
    """Where built-in models are cached: $FTPIPE_BASE_MODEL_CACHE or ~/.cache/ftpipe/base-models."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "ftpipe" / "base-models"


def is_known_base_model(name: str) -> bool:
    """True for a built-in name or `local:/abs/path` pointing at a directory with a config.json."""
    if name in BUILTIN_MODELS:
        return True
    if name.startswith(LOCAL_PREFIX):
        path = Path(name[len(LOCAL_PREFIX) :])
        return path.is_absolute() and (path / "config.json").is_file()
    return False


def training_tokenizer(name: str) -> tuple[PreTrainedTokenizerBase, int]:
    """The tokenizer and sequence limit that training ``name`` uses, without building or loading weights."""
    if name in BUILTIN_MODELS:
        # build_tokenizer is deterministic: the same vocabulary the cached model directory holds.
        return build_tokenizer(), BUILTIN_MODELS[name].max_seq_len
    if is_known_base_model(name):
        from transformers import AutoTokenizer

        path = name[len(LOCAL_PREFIX) :]
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise TrainingError(
                "model_not_available", f"Cannot load the tokenizer of {path}: {exc}", "model"
            ) from exc
        return tokenizer, HF_MAX_SEQ_LEN
    raise _unknown_model(name)


def _unknown_model(name: str) -> TrainingError:
    known = ", ".join(BUILTIN_MODELS)
    return TrainingError(
        "model_not_available",
        f"Unknown base model {name!r}: use one of {known} or local:/abs/path/to/hf-model-dir.",
        "model",
    )


def resolve_base_model(name: str, cache_dir: Path | None = None) -> ResolvedBaseModel:
    """Resolve a base model name, building (and caching) built-in models on first use."""
    if name in BUILTIN_MODELS:
        spec = BUILTIN_MODELS[name]
        path = _ensure_builtin(name, spec, cache_dir or default_cache_dir())
        return ResolvedBaseModel(name, path, "builtin", False, spec.base_learning_rate, spec.max_seq_len)
    if name.startswith(LOCAL_PREFIX):
        path = Path(name[len(LOCAL_PREFIX) :])
        if path.is_absolute() and (path / "config.json").is_file():
            return ResolvedBaseModel(name, path, "hf", True, HF_LORA_LEARNING_RATE, HF_MAX_SEQ_LEN)
    raise _unknown_model(name)


def build_builtin_model(spec: BuiltinModelSpec) -> LlamaForCausalLM:
    """Create the randomly initialised model for `spec`; identical weights for the same spec."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_seq_len,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attention_dropout=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        model = LlamaForCausalLM(config)
    return model


def _ensure_builtin(name: str, spec: BuiltinModelSpec, cache_dir: Path) -> Path:
    short = name[len(LOCAL_PREFIX) :]
    target = cache_dir / f"{short}-{BUILD_VERSION}"
    if (target / "ftpipe_base.json").is_file():
        return target
    with _build_lock:
        if (target / "ftpipe_base.json").is_file():
            return target
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Build in a temp dir then rename, so concurrent processes never see a half-written model.
        tmp = Path(tempfile.mkdtemp(prefix=f".{short}-", dir=cache_dir))
        try:
            model = build_builtin_model(spec)
            model.save_pretrained(tmp, safe_serialization=True)
            build_tokenizer().save_pretrained(tmp)
            meta = {"name": name, "build_version": BUILD_VERSION, "spec": asdict(spec)}
            (tmp / "ftpipe_base.json").write_text(json.dumps(meta, indent=2))
            try:
                tmp.rename(target)
            except OSError:
                if not (target / "ftpipe_base.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
