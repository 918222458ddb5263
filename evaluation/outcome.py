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
    duration_s: float = Field(default=0.0, description="Time spent asking (part may overlap training)")
    calls: int = Field(default=0, description="Responses calls made")
    cached_answers: int = Field(default=0, description="Answers taken from the eval cache instead of asked")

    def metric_values(self) -> dict[str, float]:
        """Flat metrics for experiment tracking: ``eval.<model label>.<metric>``, the selection and the gate."""
        out: dict[str, float] = {}
        for m in self.models:
            label = m.role.replace("-", "_") + (f"_step_{m.step}" if m.role == "checkpoint" else "")
            for name in ("score", "exact_match", "token_f1", "rouge_l", "checks_pass_rate", "judge_grade"):
                value = getattr(m, name)
                if value is not None:
                    out[f"eval.{label}.{name}"] = float(value)
            if m.latency_mean_s is not None:
                out[f"eval.{label}.latency_mean_s"] = m.latency_mean_s
        selected = next((m for m in self.models if self.selected and m.model == self.selected.model), None)
        if selected is not None and selected.score is not None:
            out["eval.score"] = selected.score  # the headline `ftpipe runs list` shows
        if self.gate_passed is not None:
            out["eval.gate_passed"] = float(self.gate_passed)
        out["eval.duration_s"] = self.duration_s
        return out

    def tags(self, promoted_as: str | None) -> dict[str, str]:
        """Tracking tags: the selected model and, when promoted, the champion name it now serves under."""
        tags = {"eval.score_name": self.score_name}
        if self.selected is not None:
            tags["eval.selected_model"] = self.selected.model
        if self.gate_passed is not None:
            tags["eval.gate"] = "passed" if self.gate_passed else "failed"
        if promoted_as is not None and self.selected is not None:
            tags["champion"] = promoted_as
            tags[f"champion.{promoted_as}"] = self.selected.model
        return tags
