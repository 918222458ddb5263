"""Typed flow parameters and result (rendered as a form by the Prefect UI). No secrets live here.

Prefect-free on purpose: the CLI reads its defaults from these models while building its parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract import wire
from contract.hyperparameters import Hyperparameters, MethodType, Seed
from tasks.smoke_prompts import SmokePrompt

if TYPE_CHECKING:
    from client.models import Method
    from tasks.wait import PollPolicy

TRAIN_NAMES = ("train.jsonl", "training.jsonl")
VALIDATION_NAMES = ("validation.jsonl", "valid.jsonl", "val.jsonl")
SMOKE_NAMES = ("smoke.jsonl",)


class PollingSettings(BaseModel):
    """How the wait stage polls the job."""

    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(default=2.0, gt=0, description="First poll interval")
    max_interval_s: float = Field(default=15.0, gt=0, description="Interval cap while nothing changes")
    timeout_s: float = Field(default=3600.0, gt=0, description="Give up waiting after this long")

    def policy(self) -> PollPolicy:
        """The wait task's policy object."""
        from tasks.wait import PollPolicy  # the wait module imports Prefect

        return PollPolicy(
            interval_s=self.interval_s,
            max_interval_s=max(self.interval_s, self.max_interval_s),
            timeout_s=self.timeout_s,
        )


class BackendOptions(BaseModel):
    """Non-secret connection overrides; the API key only ever comes from the environment/settings."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(
        default=None, description="API root; set to use a remote MKA1 API instead of the embedded backend"
    )
    on_behalf_of: str | None = Field(default=None, description="End-user id sent as X-On-Behalf-Of")


class FineTuneParams(BaseModel):
    """Inputs of the ``fine-tune`` flow."""

    model_config = ConfigDict(extra="forbid")

    dataset_dir: Path | None = Field(
        default=None, description="Folder with train.jsonl [validation.jsonl] [smoke.jsonl]"
    )
    train_file: Path | None = Field(
        default=None, description="Training JSONL (overrides the dataset folder's)"
    )
    validation_file: Path | None = Field(
        default=None, description="Validation JSONL (overrides the dataset folder's)"
    )
    smoke_file: Path | None = Field(
        default=None, description="Smoke prompts JSONL (overrides the dataset folder's)"
    )
    model: str = Field(default="local:tiny-chat", min_length=1, description="Base model id")
    suffix: str | None = Field(
        default=None, max_length=wire.MAX_SUFFIX_CHARS, description="Added to the fine-tuned model's name"
    )
    seed: Seed | None = Field(default=42, description="Training seed (part of the job's identity)")
    method: MethodType = Field(default="supervised", description="Training method")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    metadata: dict[str, str] = Field(default_factory=dict, description="Extra job metadata (string pairs)")
    polling: PollingSettings = Field(default_factory=PollingSettings)
    smoke_prompts: list[SmokePrompt] = Field(
        default_factory=list, description="Used in addition to the smoke file"
    )
    smoke_max_output_tokens: int = Field(
        default=32, ge=1, le=wire.MAX_OUTPUT_TOKENS_CAP, description="Answer length of each smoke prompt"
    )
    output_dir: Path | None = Field(
        default=None, description="Where frames and plots go (default runs/<job id>)"
    )
    state_dir: Path | None = Field(
        default=None, description="Local upload/job index dir (default: user state dir)"
    )
    fresh_job_if_failed: bool = Field(
        default=False,
        description="Create a new job when the previous job with the same inputs failed or was cancelled",
    )
    backend: BackendOptions = Field(default_factory=BackendOptions)

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str]) -> dict[str, str]:
        # Checked here, before anything is uploaded, not only when the job-create body is built.
        problem = wire.metadata_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _need_training_data(self) -> FineTuneParams:
        if self.dataset_dir is None and self.train_file is None:
            raise ValueError("give dataset_dir or train_file")
        if self.hyperparameters.beta is not None and self.method != "dpo":
            raise ValueError("hyperparameters.beta only applies to method 'dpo'")
        return self

    def _from_dir(self, names: tuple[str, ...]) -> Path | None:
        if self.dataset_dir is None:
            return None
        return next((self.dataset_dir / n for n in names if (self.dataset_dir / n).is_file()), None)

    def train_path(self) -> Path:
        """The training file (explicit, else the dataset folder's)."""
        path = self.train_file or self._from_dir(TRAIN_NAMES)
        if path is None:
            raise FileNotFoundError(f"no {' or '.join(TRAIN_NAMES)} in {self.dataset_dir}")
        return path

    def validation_path(self) -> Path | None:
        """The validation file, if any."""
        return self.validation_file or self._from_dir(VALIDATION_NAMES)

    def smoke_path(self) -> Path | None:
        """The smoke prompts file, if any."""
        return self.smoke_file or self._from_dir(SMOKE_NAMES)

    def job_method(self) -> Method:
        """The wire ``method`` object."""
        from client.models import Method  # the client package imports httpx; the CLI parses without it

        return Method.model_validate(self.hyperparameters.wire(self.method))
