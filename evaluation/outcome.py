"""The ``evaluation`` object of result.json: what was asked, how each model scored, selection, gate, promotion."""

from __future__ import annotations

from pydantic import BaseModel, Field

from evaluation.gate import GateThresholds
from evaluation.results import ModelSummary
from evaluation.scoring import SCORE_DEFINITION, SCORE_NAME
from evaluation.selection import Selection


class EvalSetInfo(BaseModel):
    """Which prompts were asked."""

    source: str
    kind: str
    size: int
    fingerprint: str | None = None
    skipped: int = 0


class EvaluationReport(BaseModel):
    """The ``evaluation`` object of result.json."""

    score_name: str = SCORE_NAME
    score_definition: str = SCORE_DEFINITION
    eval_set: EvalSetInfo | None = None
    smoke_set: EvalSetInfo | None = None
    models: list[ModelSummary] = Field(default_factory=list, description="Per-model means, in asking order")
    selected: Selection | None = None
    gate_passed: bool | None = Field(default=None, description="None: nothing to gate on")
    gate: GateThresholds = Field(default_factory=GateThresholds)
    gate_failures: list[str] = Field(default_factory=list)
    promotion: str | None = Field(default=None, description="What promotion did and why")
    promoted: bool = Field(default=False, description="The selected model became the champion")
    duration_s: float = 0.0
    calls: int = 0
