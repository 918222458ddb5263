"""Model name resolution and the model catalogue: built-in bases, configured aliases of them, and the
fine-tuned and checkpoint models owned by the caller."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from backend.db import Database
from backend.errors import BackendHTTPError


@dataclass(frozen=True)
class ModelRef:
    """A model a caller may use: its public name and what the trainer/generator should load."""

    name: str
    kind: Literal["base", "fine-tuned", "checkpoint"]
    ref: str | Path  # base model name for the trainer/generator, or a model directory

    def trainer_base(self) -> str:
        """The base_model string for a TrainingSpec (a model dir becomes ``local:/abs/dir``)."""
        return self.ref if isinstance(self.ref, str) else f"local:{self.ref}"


@dataclass(frozen=True)
class ModelInfo:
    """What ``GET /models`` tells about one model."""

    id: str
    created: int
    owned_by: str
    base_model: str | None  # what it was trained from (fine-tuned, checkpoint) or stands for (alias)
    context_window: int | None


def is_known_base_model(name: str) -> bool:
    """Delegate to the trainer (imported lazily: it pulls in torch)."""
    from backend.trainer.base_models import is_known_base_model as known

    return known(name)


def _not_found(name: str, param: str | None) -> BackendHTTPError:
    return BackendHTTPError(
        404,
        f"The model '{name}' does not exist or you do not have access to it. Use a built-in base model "
        "(local:tiny-chat, local:micro-chat), local:/abs/path/to/hf-model-dir or one of your fine-tuned models.",
        code="model_not_found",
        param=param,
    )


def resolve_model(
    db: Database, owner: str, name: str, *, param: str = "model", aliases: Mapping[str, str] | None = None
) -> ModelRef:
    """Resolve ``name`` for ``owner`` or raise a 404 contract error (someone else's model is unknown).

    An alias (``model_aliases`` setting) resolves to its local base model but keeps its own name.
    """
    row = db.one("SELECT kind, path FROM models WHERE id = ? AND owner = ?", (name, owner))
    if row is not None:
        path = Path(row["path"])
        if not path.is_dir():
            raise BackendHTTPError(
                404, f"Model '{name}' no longer has weights on disk.", code="model_not_found", param=param
            )
        return ModelRef(name=name, kind=row["kind"], ref=path)
    target = (aliases or {}).get(name, name)
    if is_known_base_model(target):
        return ModelRef(name=name, kind="base", ref=target)
    raise _not_found(name, param)


def _base_context_window(name: str) -> int | None:
    from backend.trainer.base_models import BUILTIN_MODELS, HF_MAX_SEQ_LEN, LOCAL_PREFIX

    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name].max_seq_len
    return HF_MAX_SEQ_LEN if name.startswith(LOCAL_PREFIX) else None


def _dir_context_window(path: Path) -> int | None:
    from backend.trainer.modeling import MODEL_META

    try:
        value = json.loads((path / MODEL_META).read_text(encoding="utf-8")).get("max_seq_len")
    except (OSError, ValueError):
        return None
    return int(value) if isinstance(value, int) else None


_OWNED_SQL = (
    "SELECT m.id, m.created_at, m.path, j.model AS base FROM models m LEFT JOIN jobs j ON j.id = m.job_id "
    "WHERE m.owner = ?"
)


def list_models(db: Database, owner: str, aliases: Mapping[str, str], organization: str) -> list[ModelInfo]:
    """Built-in bases, then aliases, then this owner's fine-tuned and checkpoint models (oldest first)."""
    from backend.trainer.base_models import BUILTIN_MODELS

    out = [ModelInfo(name, 0, "system", None, _base_context_window(name)) for name in BUILTIN_MODELS]
    out += [
        ModelInfo(alias, 0, "system", target, _base_context_window(target))
        for alias, target in aliases.items()
        if alias not in BUILTIN_MODELS
    ]
    for row in db.all(_OWNED_SQL + " ORDER BY m.seq", (owner,)):
        path = Path(row["path"])
        if path.is_dir():  # weights removed: the model is gone (Responses answer 404 for it too)
            out.append(
                ModelInfo(row["id"], row["created_at"], organization, row["base"], _dir_context_window(path))
            )
    return out


def describe_model(
    db: Database, owner: str, name: str, aliases: Mapping[str, str], organization: str
) -> ModelInfo:
    """One model this owner may use (also ``local:/abs/dir`` bases, which the list cannot enumerate)."""
    ref = resolve_model(db, owner, name, param="model_id", aliases=aliases)
    if isinstance(ref.ref, Path):
        row = db.one(_OWNED_SQL + " AND m.id = ?", (owner, name))
        if row is None:
            raise _not_found(name, "model_id")
        return ModelInfo(name, row["created_at"], organization, row["base"], _dir_context_window(ref.ref))
    target = ref.ref if ref.ref != name else None
    return ModelInfo(name, 0, "system", target, _base_context_window(ref.ref))
