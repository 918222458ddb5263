"""Request bodies (pydantic at the edge; unknown fields are rejected with a 400 naming them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Auto = Literal["auto"]
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


class Hyperparameters(BaseModel):
    """Each hyperparameter is a number or "auto" (the trainer resolves "auto")."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: Auto | Annotated[int, Field(ge=1, le=50, strict=True)] = "auto"
    batch_size: Auto | Annotated[int, Field(ge=1, le=256, strict=True)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] = "auto"
    beta: Auto | Annotated[float, Field(gt=0, le=10)] = "auto"


class MethodHyperparameters(BaseModel):
    """``{"hyperparameters": {...}}`` under ``method.supervised`` / ``method.dpo``."""

    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(BaseModel):
    """``method`` of a job create body."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo"] = "supervised"
    supervised: MethodHyperparameters | None = None
    dpo: MethodHyperparameters | None = None


def check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    """At most 16 pairs, keys <= 64 chars, values <= 512 chars."""
    if value is None:
        return None
    if len(value) > MAX_METADATA_PAIRS:
        raise ValueError(f"at most {MAX_METADATA_PAIRS} key-value pairs are allowed")
    for k, v in value.items():
        if len(k) > MAX_METADATA_KEY:
            raise ValueError(f"key '{k[:20]}...' is longer than {MAX_METADATA_KEY} characters")
        if len(v) > MAX_METADATA_VALUE:
            raise ValueError(f"value of '{k}' is longer than {MAX_METADATA_VALUE} characters")
    return value


class JobCreate(BaseModel):
    """POST /fine_tuning/jobs body."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, max_length=1024)]
    training_file: Annotated[str, Field(min_length=1, max_length=256)]
    validation_file: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    suffix: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9._\-]*$")] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1, strict=True)] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None  # deprecated top-level form
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(value)

    def _method_section(self) -> tuple[Literal["supervised", "dpo"], MethodHyperparameters | None]:
        method = self.method or Method()
        return method.type, method.dpo if method.type == "dpo" else method.supervised

    def resolved_method(self) -> tuple[Literal["supervised", "dpo"], Hyperparameters]:
        """Method type and the hyperparameters that apply (method form wins over the deprecated one)."""
        method_type, section = self._method_section()
        if section is not None:
            return method_type, section.hyperparameters
        return method_type, self.hyperparameters or Hyperparameters()

    def hyperparameters_param(self) -> str:
        """Field path of the hyperparameters `resolved_method` picked, for error ``param`` values."""
        method_type, section = self._method_section()
        return f"method.{method_type}.hyperparameters" if section is not None else "hyperparameters"


class InputMessage(BaseModel):
    """A message item of Responses ``input``."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        """Plain text of the content (text parts joined)."""
        if isinstance(self.content, str):
            return self.content
        parts = [
            str(p.get("text", ""))
            for p in self.content
            if p.get("type") in {"input_text", "output_text", "text"}
        ]
        return "".join(parts)


class ResponseCreate(BaseModel):
    """POST /responses body (the subset the local backend implements)."""

    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, Field(min_length=1, max_length=1024)]
    input: str | list[InputMessage]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=4096)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    metadata: dict[str, str] | None = None
    previous_response_id: str | None = None
    store: bool = True
    seed: int | None = None

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(value)
