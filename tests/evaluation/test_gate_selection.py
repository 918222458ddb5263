"""Best-model selection and the gate's pass/fail verdicts (each failure names threshold and value)."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.gate import GateThresholds, check_gate
from evaluation.results import ModelSummary
from evaluation.selection import select_best


def _s(model: str, role: str, score: float | None, **kw: Any) -> ModelSummary:
    return ModelSummary(model=model, role=role, answers=10, score=score, **kw)  # type: ignore[arg-type]


SUMMARIES = [
    _s("base", "base", 0.05),
    _s("ck1", "checkpoint", 0.30, step=10, full_valid_loss=2.0),
    _s("ck2", "checkpoint", 0.42, step=20, full_valid_loss=1.5),
    _s("ck3", "checkpoint", 0.40, step=30, full_valid_loss=1.4),
    _s("ft", "fine-tuned", 0.40, step=30, full_valid_loss=1.4),
]


def test_select_by_eval_score_picks_the_highest_candidate_never_the_base() -> None:
    pick = select_best([_s("base", "base", 0.99), *SUMMARIES[1:]], "eval_score")
    assert (pick.model, pick.value, pick.step) == ("ck2", 0.42, 20)


def test_select_ties_prefer_the_final_model() -> None:
    pick = select_best(SUMMARIES[:2] + SUMMARIES[3:], "eval_score")  # ck3 and ft both 0.40
    assert pick.model == "ft"
    assert select_best(SUMMARIES, "full_valid_loss").model == "ft"  # ck3 and ft both 1.4


def test_select_by_full_valid_loss() -> None:
    summaries = [*SUMMARIES[:4], _s("ft", "fine-tuned", 0.40, step=30, full_valid_loss=1.6)]
    pick = select_best(summaries, "full_valid_loss")
    assert (pick.model, pick.value) == ("ck3", 1.4)


def test_incomplete_candidate_is_not_selectable_and_missing_values_fall_back() -> None:
    broken = [_s("ck9", "checkpoint", 0.99, step=5, errors=3), _s("ft", "fine-tuned", 0.2)]
    assert select_best(broken, "eval_score").model == "ft"
    no_loss = select_best([_s("ft", "fine-tuned", 0.2)], "full_valid_loss")
    assert no_loss.model == "ft" and "no candidate reports full_valid_loss" in no_loss.reason
    with pytest.raises(ValueError):
        select_best([_s("base", "base", 0.1)], "eval_score")


def test_gate_passes_default_thresholds() -> None:
    result = check_gate(SUMMARIES[2], SUMMARIES[0], GateThresholds())
    assert result.passed and result.reason() == "gate passed"
    assert result.checked == ["min_improvement +0.0100"]


def test_gate_fails_on_min_score_with_threshold_and_value() -> None:
    result = check_gate(SUMMARIES[2], SUMMARIES[0], GateThresholds(min_score=0.99))
    assert not result.passed
    assert result.reason() == "gate failed: min_score: ck2 scored 0.4200, below the threshold 0.9900"


def test_gate_fails_on_min_improvement() -> None:
    result = check_gate(_s("ft", "fine-tuned", 0.055), SUMMARIES[0], GateThresholds(min_improvement=0.01))
    assert result.failures == [
        "min_improvement: ft scored 0.0550 vs base 0.0500 (improvement +0.0050), below the threshold +0.0100"
    ]


def test_gate_fails_when_base_or_selected_has_no_score_and_on_smoke() -> None:
    missing_base = check_gate(SUMMARIES[2], _s("base", "base", 0.1, errors=2), GateThresholds())
    assert "base has no complete eval score" in missing_base.reason()
    smoke = check_gate(
        _s("ft", "fine-tuned", 0.9, smoke_passed=False, smoke_failed=2), SUMMARIES[0], GateThresholds()
    )
    assert smoke.failures == ["smoke checks: ft failed 2 smoke prompt(s)"]
    off = check_gate(_s("ft", "fine-tuned", None), None, GateThresholds(min_improvement=None))
    assert off.passed and off.checked == []
