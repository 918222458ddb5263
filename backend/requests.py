"""Request bodies (pydantic at the edge; unknown fields are rejected with a 400 naming them)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contract import wire
from contract.hyperparameters import MethodType
from contract.wire import Auto


class Hyperparameters(BaseModel):
    """Each hyperparameter is a number or "auto" (the trainer resolves "auto")."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: Auto | Annotated[int, Field(ge=wire.N_EPOCHS_MIN, le=wire.N_EPOCHS_MAX, strict=True)] = "auto"
    batch_size: (
        Auto | Annotated[int, Field(ge=wire.BATCH_SIZE_MIN, le=wire.BACKEND_BATCH_SIZE_MAX, strict=True)]
    ) = "auto"
    learning_rate_multiplier: (
        Auto
        | Annotated[
            float, Field(gt=wire.LEARNING_RATE_MULTIPLIER_GT, le=wire.BACKEND_LEARNING_RATE_MULTIPLIER_MAX)
        ]
    ) = "auto"
    beta: Auto | Annotated[float, Field(gt=wire.BETA_GT, le=wire.BACKEND_BETA_MAX)] = "auto"


class MethodHyperparameters(BaseModel):
    """``{"hyperparameters": {...}}`` under ``method.supervised`` / ``method.dpo``."""

    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(BaseModel):
    """``method`` of a job create body."""

    model_config = ConfigDict(extra="forbid")

    type: MethodType = "supervised"
    supervised: MethodHyperparameters | None = None
    dpo: MethodHyperparameters | None = None


def check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    """The contract's metadata limits (pairs, key and value lengths)."""
    problem = wire.metadata_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


class JobCreate(BaseModel):
    """POST /fine_tuning/jobs body."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, max_length=1024)]
    training_file: Annotated[str, Field(min_length=1, max_length=256)]
    validation_file: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    suffix: Annotated[str, Field(max_length=wire.MAX_SUFFIX_CHARS, pattern=r"^[A-Za-z0-9._\-]*$")] | None = (
        None
    )
    seed: Annotated[int, Field(ge=wire.SEED_MIN, le=wire.SEED_MAX, strict=True)] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None  # deprecated top-level form
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(value)

    def _method_section(self) -> tuple[MethodType, MethodHyperparameters | None]:
        method = self.method or Method()
        return method.type, method.dpo if method.type == "dpo" else method.supervised

    def resolved_method(self) -> tuple[MethodType, Hyperparameters]:
        """Method type and the hyperparameters that apply (method form wins over the deprecated one)."""
        method_type, section = self._method_section()
        if section is not None:
            return method_type, section.hyperparameters
        return method_type, self.hyperparameters or Hyperparameters()

    def hyperparameters_param(self) -> str:
        """Field path of the hyperparameters `resolved_method` picked, for error ``param`` values."""
        method_type, section = self._method_section()
        return f"method.{method_type}.hyperparameters" if section is not None else "hyperparameters"
