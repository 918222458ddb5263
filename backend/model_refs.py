"""Model name resolution: built-in/base names, and fine-tuned or checkpoint ids owned by the caller."""

from __future__ import annotations

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


def is_known_base_model(name: str) -> bool:
    """Delegate to the trainer (imported lazily: it pulls in torch)."""
    from backend.trainer.base_models import is_known_base_model as known

    return known(name)


def resolve_model(db: Database, owner: str, name: str, *, param: str = "model") -> ModelRef:
    """Resolve ``name`` for ``owner`` or raise a 404 contract error (someone else's model is unknown)."""
    row = db.one("SELECT kind, path FROM models WHERE id = ? AND owner = ?", (name, owner))
    if row is not None:
        path = Path(row["path"])
        if not path.is_dir():
            raise BackendHTTPError(
                404, f"Model '{name}' no longer has weights on disk.", code="model_not_found", param=param
            )
        return ModelRef(name=name, kind=row["kind"], ref=path)
    if is_known_base_model(name):
        return ModelRef(name=name, kind="base", ref=name)
    raise BackendHTTPError(
        404,
        f"The model '{name}' does not exist or you do not have access to it. Use a built-in base model "
        "(local:tiny-chat, local:micro-chat), local:/abs/path/to/hf-model-dir or one of your fine-tuned models.",
        code="model_not_found",
        param=param,
    )
