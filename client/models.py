"""Pydantic v2 models for the MKA1 wire contract (OpenAI fine-tuning shapes, snake_case).

Every model keeps unknown fields (``extra="allow"``) so a newer server never breaks an older client.
Request models are serialised with ``to_body()`` (``exclude_none``), so unset options are not sent.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract import wire
from contract.hyperparameters import BatchSize, Beta, LearningRateMultiplier, NEpochs, Seed


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class _Request(_Model):
    def to_body(self) -> dict[str, Any]:
        """JSON body for the wire: ``None`` fields left out."""
        return self.model_dump(mode="json", exclude_none=True)


def _check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    problem = wire.metadata_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# ---------------------------------------------------------------------------------------------- lists

T = TypeVar("T")


class ListPage(_Model, Generic[T]):
    """One page of a list endpoint: ``{object: "list", data, has_more, first_id, last_id}``."""

    object: str = "list"
    data: list[T] = Field(default_factory=list)
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None

    @property
    def next_cursor(self) -> str | None:
        """The ``after`` value for the next page, or None when there is none."""
        if not self.has_more or not self.data:
            return None
        if self.last_id:
            return self.last_id
        last_id = getattr(self.data[-1], "id", None)
        return last_id if isinstance(last_id, str) else None


# ---------------------------------------------------------------------------------------------- files


class FileObject(_Model):
    """An uploaded file."""

    id: str
    object: str = "file"
    bytes: int | None = None
    created_at: int | None = None
    filename: str | None = None
    purpose: str | None = None
    expires_at: int | None = None
    status: str | None = None
    status_details: str | None = None
    sha256: str | None = None  # MKA1 reports the stored bytes' hash; OpenAI does not


class FileDeleted(_Model):
    """Result of ``DELETE /files/{id}``."""

    id: str
    object: str = "file"
    deleted: bool


# ---------------------------------------------------------------------------------------------- jobs


class JobStatus(StrEnum):
    """Known fine-tuning job statuses (``contract.wire.JOB_STATUSES``, pinned by a test); others stay str."""

    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(JobStatus(s) for s in wire.TERMINAL_STATUSES)

# left_to_right: a known value becomes the enum member, anything else stays a str instead of failing.
StatusField = Annotated[JobStatus | str, Field(union_mode="left_to_right")]


class SupervisedHyperparameters(_Model):
    """Hyperparameters for supervised fine-tuning; each a number in the wire range or ``"auto"``."""

    n_epochs: NEpochs | None = None
    batch_size: BatchSize | None = None
    learning_rate_multiplier: LearningRateMultiplier | None = None


class DpoHyperparameters(SupervisedHyperparameters):
    """Hyperparameters for DPO; adds ``beta``."""

    beta: Beta | None = None


class SupervisedMethod(_Model):
    """``method.supervised``."""

    hyperparameters: SupervisedHyperparameters | None = None


class DpoMethod(_Model):
    """``method.dpo``."""

    hyperparameters: DpoHyperparameters | None = None


class Method(_Model):
    """Fine-tuning method: ``{type: supervised|dpo, supervised: {...} | dpo: {...}}``."""

    # str, not a Literal: a job returned by a newer server may use a method we do not know.
    type: str = "supervised"
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None


class JobError(_Model):
    """Why a job failed."""

    code: str | None = None
    message: str | None = None
    param: str | None = None


class FineTuningJob(_Model):
    """A fine-tuning job as returned by the server."""

    id: str
    object: str = "fine_tuning.job"
    created_at: int | None = None
    finished_at: int | None = None
    model: str | None = None
    fine_tuned_model: str | None = None
    organization_id: str | None = None
    status: StatusField
    training_file: str | None = None
    validation_file: str | None = None
    hyperparameters: dict[str, Any] | None = None
    method: Method | None = None
    seed: int | None = None
    suffix: str | None = None
    metadata: dict[str, str] | None = None
    result_files: list[str] = Field(default_factory=list)
    trained_tokens: int | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    error: JobError | None = None

    @field_validator("result_files", mode="before")
    @classmethod
    def _null_result_files(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def is_terminal(self) -> bool:
        """True once the job can no longer change (succeeded, failed, cancelled); unknown -> False."""
        return self.status in TERMINAL_STATUSES

    @property
    def known_status(self) -> JobStatus | None:
        """The status as a ``JobStatus``, or None when the server sent a value we do not know."""
        return self.status if isinstance(self.status, JobStatus) else None


class FineTuningJobEvent(_Model):
    """One job event (log line or metrics point)."""

    id: str
    object: str = "fine_tuning.job.event"
    created_at: int | None = None
    level: str = "info"
    message: str = ""
    type: str | None = None
    data: dict[str, Any] | None = None


class CheckpointMetrics(_Model):
    """Metrics recorded at a checkpoint (``contract.wire.CHECKPOINT_METRICS``, pinned by a test)."""

    step: int | float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class FineTuningJobCheckpoint(_Model):
    """A saved checkpoint; ``fine_tuned_model_checkpoint`` is usable as a model id."""

    id: str
    object: str = "fine_tuning.job.checkpoint"
    created_at: int | None = None
    fine_tuning_job_id: str | None = None
    fine_tuned_model_checkpoint: str | None = None
    step_number: int | None = None
    metrics: CheckpointMetrics = Field(default_factory=CheckpointMetrics)

    @field_validator("metrics", mode="before")
    @classmethod
    def _null_metrics(cls, value: Any) -> Any:
        return {} if value is None else value


class JobCreateRequest(_Request):
    """Body of ``POST /fine_tuning/jobs``."""

    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    suffix: str | None = Field(default=None, max_length=wire.MAX_SUFFIX_CHARS)
    seed: Seed | None = None
    method: Method | None = None
    hyperparameters: SupervisedHyperparameters | None = Field(
        None, description="Deprecated top-level form; prefer method"
    )
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _check_metadata(value)

    @field_validator("method")
    @classmethod
    def _method_type(cls, value: Method | None) -> Method | None:
        if value is not None and value.type not in wire.METHODS:
            allowed = " or ".join(repr(m) for m in wire.METHODS)
            raise ValueError(f"method.type must be {allowed}, got {value.type!r}")
        return value


# ---------------------------------------------------------------------------------------------- responses


class InputMessage(_Model):
    """A message item in ``input``: ``{type: "message", role, content}``."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[dict[str, Any]]


class ResponseCreateRequest(_Request):
    """Body of ``POST /responses``."""

    model: str = Field(min_length=1)
    input: str | list[InputMessage]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    metadata: dict[str, str] | None = None
    previous_response_id: str | None = None
    store: bool | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _check_metadata(value)


class OutputContent(_Model):
    """A content part of an output message (``type: output_text`` carries ``text``)."""

    type: str
    text: str | None = None


class OutputItem(_Model):
    """An item of ``output`` (usually ``type: message``)."""

    type: str = "message"
    id: str | None = None
    role: str | None = None
    status: str | None = None
    content: list[OutputContent] = Field(default_factory=list)


class ResponseUsage(_Model):
    """Token usage of one response."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class ResponseError(_Model):
    """Error attached to a failed response."""

    code: str | None = None
    message: str | None = None


class ResponseObject(_Model):
    """Result of ``POST /responses``; ``output_text`` is the server's field or the joined output text."""

    id: str
    object: str = "response"
    created_at: int | None = None
    status: str | None = None
    model: str | None = None
    output: list[OutputItem] = Field(default_factory=list)
    output_text: str = ""
    usage: ResponseUsage | None = None
    error: ResponseError | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_output_text(cls, data: Any) -> Any:
        # The server's convenience field wins; otherwise derive it the way OpenAI's SDK does.
        if isinstance(data, dict) and data.get("output_text") is None:
            data = {**data, "output_text": _join_output_text(data.get("output"))}
        return data


def _join_output_text(output: Any) -> str:
    if not isinstance(output, list):
        return ""
    parts: list[str] = []
    for item in output:
        item_dict = item.model_dump() if isinstance(item, BaseModel) else item
        if not isinstance(item_dict, dict) or not isinstance(item_dict.get("content"), list):
            continue
        for part in item_dict["content"]:
            if (
                isinstance(part, dict)
                and part.get("type") == "output_text"
                and isinstance(part.get("text"), str)
            ):
                parts.append(part["text"])
    return "".join(parts)


class ResponseStreamEvent(_Model):
    """One Server-Sent Event of a streamed ``POST /responses`` (``response.output_text.delta`` carries
    ``delta``; ``response.completed|incomplete|failed`` carry the final ``response``; ``error`` its
    ``code``/``message``). Fields of other event types stay in the model's extras."""

    type: str
    sequence_number: int | None = None
    delta: str | None = None
    text: str | None = None
    response: ResponseObject | None = None
    code: str | None = None
    message: str | None = None
