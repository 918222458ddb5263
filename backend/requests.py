"""Request bodies (pydantic at the edge; unknown fields are rejected with a 400 naming them)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from contract import wire
from contract.hyperparameters import BatchSize, Beta, LearningRateMultiplier, MethodType, NEpochs


def _cap(name: str, high: float, rule: str) -> AfterValidator:
    """This backend's upper bound on a hyperparameter, failing with the whole rule (never pydantic's text)."""

    def check(value: Any) -> Any:
        if value != wire.AUTO and value > high:
            raise ValueError(f"{name} must be {rule} (this backend's limit)")
        return value

    return AfterValidator(check)


class Hyperparameters(BaseModel):
    """Each hyperparameter is a JSON number in range or "auto" (the trainer resolves "auto").

    One rule for all four: strings such as "2" are refused, integral numbers such as 2.0 are accepted for
    n_epochs and batch_size; a bad value fails with the rule (contract.hyperparameters), not union noise.
    """

    model_config = ConfigDict(extra="forbid")

    n_epochs: NEpochs = "auto"
    batch_size: Annotated[
        BatchSize,
        _cap(
            "batch_size",
            wire.BACKEND_BATCH_SIZE_MAX,
            f"an integer from 1 to {wire.BACKEND_BATCH_SIZE_MAX}, or 'auto'",
        ),
    ] = "auto"
    learning_rate_multiplier: Annotated[
        LearningRateMultiplier,
        _cap(
            "learning_rate_multiplier",
            wire.BACKEND_LEARNING_RATE_MULTIPLIER_MAX,
            f"a number > 0 and <= {wire.BACKEND_LEARNING_RATE_MULTIPLIER_MAX:g}, or 'auto'",
        ),
    ] = "auto"
    beta: Annotated[
        Beta, _cap("beta", wire.BACKEND_BETA_MAX, f"a number > 0 and <= {wire.BACKEND_BETA_MAX:g}, or 'auto'")
    ] = "auto"


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


SUFFIX_RE = re.compile(rf"[A-Za-z0-9._\-]{{0,{wire.MAX_SUFFIX_CHARS}}}")


class JobCreate(BaseModel):
    """POST /fine_tuning/jobs body."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, max_length=1024)]
    training_file: Annotated[str, Field(min_length=1, max_length=256)]
    validation_file: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    suffix: str | None = None
    seed: Annotated[int, Field(ge=wire.SEED_MIN, le=wire.SEED_MAX, strict=True)] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None  # deprecated top-level form
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(value)

    @field_validator("suffix")
    @classmethod
    def _check_suffix(cls, value: str | None) -> str | None:
        # It becomes part of a model id (ft:<base>:<suffix>:<id>), so ':' and '/' are kept out.
        if value is not None and not SUFFIX_RE.fullmatch(value):
            raise PydanticCustomError(
                "suffix",
                "suffix must be at most {n} characters of letters, digits, '.', '_' and '-'",
                {"n": wire.MAX_SUFFIX_CHARS},
            )
        return value

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
