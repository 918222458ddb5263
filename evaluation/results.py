"""The models the eval stage asks and their per-model summaries (no pandas: ``flows.params`` imports these)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

ModelRole = Literal["base", "fine-tuned", "checkpoint", "champion"]


@dataclass(frozen=True)
class EvalModel:
    """A model to evaluate and where it came from."""

    model: str
    role: ModelRole
    step: int | None = None
    full_valid_loss: float | None = None


class ModelSummary(BaseModel):
    """One model's aggregate over the eval set (and its smoke checks, when a smoke set ran)."""

    model: str
    role: ModelRole
    step: int | None = None
    answers: int = Field(description="Eval answers scored")
    errors: int = Field(default=0, description="Eval calls that failed (the model is then not selectable)")
    score: float | None = Field(default=None, description="Mean per-answer score, 0..1")
    exact_match: float | None = None
    token_f1: float | None = None
    rouge_l: float | None = None
    checks_pass_rate: float | None = None
    judge_grade: float | None = Field(default=None, description="Mean judge grade, 1..5")
    latency_mean_s: float | None = None
    latency_p95_s: float | None = None
    full_valid_loss: float | None = None
    smoke_passed: bool | None = Field(
        default=None, description="Every smoke check passed (None: no smoke set)"
    )
    smoke_failed: int = Field(default=0, description="Smoke prompts with a failed check or no answer")

    @property
    def complete(self) -> bool:
        """Every eval call answered, so the mean score describes the whole set."""
        return self.errors == 0 and self.score is not None
