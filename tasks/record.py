"""The run record: everything one ``fine_tune`` run was and produced, in one typed model.

``result.json``, the Prefect result artifact, the flow's return value and the tracked MLflow run are all
rendered from a ``RunRecord``, so they cannot disagree. No secrets ever enter it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from estimate.core import EstimateVsActual
from evaluation.outcome import EvaluationReport

RECORD_VERSION = 1


class DatasetFile(BaseModel):
    """One uploaded dataset file: where it came from, its exact bytes, and its id on the server."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["training", "validation"]
    path: Path = Field(description="Absolute path of the local file")
    sha256: str
    bytes: int
    examples: int = Field(description="Valid examples the validator counted")
    file_id: str
    reused: bool = Field(default=False, description="Already uploaded: no bytes were sent")


class MetricDefinition(BaseModel):
    """Where a final metric value comes from and what it averages over."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["metrics_event", "checkpoint"]
    step: int | None = None
    over: str = Field(description="What the value averages over, e.g. 'steps 111-114 (window since ...)'")


class TrackingRef(BaseModel):
    """The MLflow run that mirrors this record (credentials never included)."""

    model_config = ConfigDict(extra="forbid")

    tracking_uri: str
    experiment_id: str
    run_id: str
    url: str | None = Field(default=None, description="The run's page, when the tracking server has a UI")


class RunRecord(BaseModel):
    """What a finished ``fine-tune`` run was (inputs as the job resolved them) and what it produced."""

    record_version: int = RECORD_VERSION
    # --- the job ----------------------------------------------------------------------------------------
    job_id: str
    status: str
    base_model: str
    method: str
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="As the job reports them: resolved values once training ran"
    )
    seed: int | None = None
    suffix: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    integrations: list[dict[str, Any]] = Field(default_factory=list)
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    total_steps: int | None = None
    idempotency_key: str
    job_attached: bool = Field(default=False, description="Re-attached to an existing job with these inputs")
    # --- the data ---------------------------------------------------------------------------------------
    training: DatasetFile
    validation: DatasetFile | None = None
    # --- the orchestration ------------------------------------------------------------------------------
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    flow_run_url: str | None = None
    started_at: datetime
    finished_at: datetime
    duration_s: float
    # --- the results ------------------------------------------------------------------------------------
    final_metrics: dict[str, float] = Field(default_factory=dict)
    metric_definitions: dict[str, MetricDefinition] = Field(default_factory=dict)
    output_dir: Path = Field(description="Absolute folder of the frames, plot and result.json")
    outputs: dict[str, Path] = Field(default_factory=dict, description="Absolute paths of the files written")
    smoke_passed: bool | None = None
    smoke_answers: list[dict[str, str]] = Field(
        default_factory=list, description="What the fine-tuned model answered to each smoke prompt"
    )
    # Filled by later stages when they ran: the eval stage's summary and the pre-launch estimate.
    evaluation: EvaluationReport | None = None
    promoted_as: str | None = Field(default=None, description="Champion name this run's model became, if any")
    estimate: EstimateVsActual | None = None
    tracking: TrackingRef | None = None

    @property
    def training_file_id(self) -> str:
        """The uploaded training file's id."""
        return self.training.file_id

    @property
    def validation_file_id(self) -> str | None:
        """The uploaded validation file's id, if any."""
        return self.validation.file_id if self.validation else None

    @property
    def uploads_reused(self) -> bool:
        """True when no dataset bytes had to be sent."""
        return self.training.reused and (self.validation is None or self.validation.reused)

    def params(self) -> dict[str, str]:
        """Flat string parameters for experiment trackers (MLflow params are strings)."""
        out: dict[str, Any] = {
            "base_model": self.base_model,
            "method": self.method,
            "seed": self.seed,
            "suffix": self.suffix,
            "training_file": str(self.training.path),
            "training_sha256": self.training.sha256,
            "training_examples": self.training.examples,
            "training_file_id": self.training.file_id,
        }
        if self.validation is not None:
            out |= {
                "validation_file": str(self.validation.path),
                "validation_sha256": self.validation.sha256,
                "validation_examples": self.validation.examples,
                "validation_file_id": self.validation.file_id,
            }
        out |= {f"metadata.{k}": v for k, v in self.metadata.items()}
        out |= dict(self.hyperparameters)
        return {k: str(v) for k, v in out.items() if v is not None}

    def to_json(self) -> str:
        """The ``result.json`` text."""
        return self.model_dump_json(indent=2)
