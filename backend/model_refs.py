"""Model name resolution and the model catalogue: built-in bases, configured aliases of them, and the
fine-tuned and checkpoint models owned by the caller."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from backend.db import Database
from backend.errors import BackendHTTPError
from backend.settings import BackendSettings

LOCAL_PREFIX = "local:"  # the trainer's prefix for a model folder (backend.trainer.base_models)


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


@dataclass(frozen=True)
class ModelAccess:
    """Which model names a caller may use besides its own models: aliases of built-in bases, and
    ``local:/dir`` folders only under the operator's roots and never under the backend's data dir (where
    every tenant's fine-tuned weights live)."""

    data_dir: Path
    local_roots: tuple[Path, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: BackendSettings) -> ModelAccess:
        return cls(
            data_dir=settings.data_dir.expanduser(),
            local_roots=tuple(settings.local_model_roots),
            aliases=settings.model_aliases,
        )

    def check_local_dir(self, name: str, param: str | None) -> None:
        """Refuse a ``local:/dir`` name outside the roots (400 naming the setting) or under the data dir
        (404, as for any model the caller cannot see). Decided on the path alone, before the filesystem is
        asked whether the folder is a model, so the answer reveals nothing about the host's files."""
        raw = name[len(LOCAL_PREFIX) :]
        if not os.path.isabs(raw):
            raise _not_found(name, param)
        path = Path(os.path.realpath(raw))
        if _within(path, Path(os.path.realpath(self.data_dir))):
            raise _not_found(name, param)
        if not any(_within(path, Path(os.path.realpath(root))) for root in self.local_roots):
            raise BackendHTTPError(
                400,
                f"Model folder '{raw}' is outside the folders this backend serves models from. An operator "
                "allows local:/path models by listing their parent folders in FTPIPE_BACKEND_LOCAL_MODEL_ROOTS "
                f"(separated by '{os.pathsep}'); none are allowed by default.",
                code="model_path_not_allowed",
                param=param,
            )


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def is_known_base_model(name: str, access: ModelAccess, param: str | None = "model") -> bool:
    """A built-in base, or an allowed ``local:/dir`` with a config.json (the trainer is imported lazily:
    it pulls in torch). Raises the access errors of ``ModelAccess.check_local_dir``."""
    from backend.trainer.base_models import BUILTIN_MODELS
    from backend.trainer.base_models import is_known_base_model as known

    if name.startswith(LOCAL_PREFIX) and name not in BUILTIN_MODELS:
        access.check_local_dir(name, param)
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
    db: Database, owner: str, name: str, access: ModelAccess, *, param: str = "model"
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
    target = access.aliases.get(name, name)
    if is_known_base_model(target, access, param):
        return ModelRef(name=name, kind="base", ref=target)
    raise _not_found(name, param)


def root_base_model(db: Database, owner: str, name: str) -> str:
    """The base model ``name`` descends from: a fine-tuned or checkpoint model leads to the model its job
    trained, back to a model that no job of this owner produced (a base or alias name)."""
    seen = {name}
    while (
        row := db.one(
            "SELECT j.model FROM models m JOIN jobs j ON j.id = m.job_id WHERE m.id = ? AND m.owner = ?",
            (name, owner),
        )
    ) is not None and row["model"] not in seen:
        name = row["model"]
        seen.add(name)
    return name


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


def describe_model(db: Database, owner: str, name: str, access: ModelAccess, organization: str) -> ModelInfo:
    """One model this owner may use (also ``local:/abs/dir`` bases, which the list cannot enumerate)."""
    ref = resolve_model(db, owner, name, access, param="model_id")
    if isinstance(ref.ref, Path):
        row = db.one(_OWNED_SQL + " AND m.id = ?", (owner, name))
        if row is None:
            raise _not_found(name, "model_id")
        return ModelInfo(name, row["created_at"], organization, row["base"], _dir_context_window(ref.ref))
    target = ref.ref if ref.ref != name else None
    return ModelInfo(name, 0, "system", target, _base_context_window(ref.ref))
