"""The gate: thresholds the selected model must meet before it may be promoted."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from evaluation.results import ModelSummary

DEFAULT_MIN_IMPROVEMENT = 0.01


class GateThresholds(BaseModel):
    """Thresholds on the eval summary; None turns one off."""

    model_config = ConfigDict(extra="forbid")

    min_score: float | None = Field(
        default=None, ge=0, le=1, description="The selected model's mean eval score must reach this"
    )
    min_improvement: float | None = Field(
        default=DEFAULT_MIN_IMPROVEMENT,
        ge=-1,
        le=1,
        description="The selected model's score minus the base model's must reach this",
    )


class GateResult(BaseModel):
    """Verdict; each failure names the threshold, the measured value and the threshold's value."""

    passed: bool
    failures: list[str] = Field(default_factory=list)
    checked: list[str] = Field(default_factory=list, description="What was checked, pass or fail")

    def reason(self) -> str:
        """One line for a failed state's message."""
        return "gate failed: " + "; ".join(self.failures) if self.failures else "gate passed"


def check_gate(selected: ModelSummary, base: ModelSummary | None, thresholds: GateThresholds) -> GateResult:
    """Apply every threshold (and the smoke checks, when a smoke set ran) to the selected model."""
    failures: list[str] = []
    checked: list[str] = []
    score = selected.score if selected.complete else None
    if thresholds.min_score is not None:
        checked.append(f"min_score {thresholds.min_score:.4f}")
        if score is None:
            failures.append(
                f"min_score {thresholds.min_score:.4f}: {selected.model} has no complete eval score"
            )
        elif score < thresholds.min_score:
            failures.append(
                f"min_score: {selected.model} scored {score:.4f}, below the threshold {thresholds.min_score:.4f}"
            )
    if thresholds.min_improvement is not None:
        checked.append(f"min_improvement {thresholds.min_improvement:+.4f}")
        base_score = base.score if base is not None and base.complete else None
        if score is None or base_score is None:
            missing = selected.model if score is None else (base.model if base else "the base model")
            failures.append(
                f"min_improvement {thresholds.min_improvement:+.4f}: {missing} has no complete eval score"
            )
        elif score - base_score < thresholds.min_improvement:
            failures.append(
                f"min_improvement: {selected.model} scored {score:.4f} vs base {base_score:.4f} "
                f"(improvement {score - base_score:+.4f}), below the threshold {thresholds.min_improvement:+.4f}"
            )
    if selected.smoke_passed is not None:
        checked.append("smoke checks")
        if not selected.smoke_passed:
            failures.append(f"smoke checks: {selected.model} failed {selected.smoke_failed} smoke prompt(s)")
    return GateResult(passed=not failures, failures=failures, checked=checked)
