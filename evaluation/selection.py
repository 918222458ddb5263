"""Pick the best of the fine-tuned model and its checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from evaluation.results import ModelSummary

SelectBy = Literal["eval_score", "full_valid_loss"]


class Selection(BaseModel):
    """The chosen model and why."""

    model: str
    role: str
    step: int | None
    criterion: SelectBy
    value: float | None
    reason: str


# Per criterion: the value a candidate is ranked by (None: not a candidate), +1 when higher is better, and the
# words for the reason line.
_CRITERIA: dict[SelectBy, tuple[Callable[[ModelSummary], float | None], float, str, str]] = {
    "eval_score": (
        lambda s: (s.score or 0.0) if s.complete else None,
        1.0,
        "highest eval score",
        "no candidate answered every eval prompt",
    ),
    "full_valid_loss": (
        lambda s: s.full_valid_loss,
        -1.0,
        "lowest full_valid_loss",
        "no candidate reports full_valid_loss",
    ),
}


def _tie_break(s: ModelSummary) -> tuple[int, int]:
    # Equal values: the final model first (it is what the job reports), then the later checkpoint.
    return (int(s.role == "fine-tuned"), s.step if s.step is not None else -1)


def select_best(summaries: list[ModelSummary], by: SelectBy) -> Selection:
    """Highest eval score or lowest full_valid_loss among the fine-tuned model and checkpoints.

    Falls back to the fine-tuned model when no candidate has the value (e.g. a server that reports no
    full_valid_loss); raises ``ValueError`` when there is no fine-tuned model at all.
    """
    candidates = [s for s in summaries if s.role in ("fine-tuned", "checkpoint")]
    final = next((s for s in candidates if s.role == "fine-tuned"), None)
    if final is None:
        raise ValueError("no fine-tuned model to select from")
    value_of, sign, best_words, none_words = _CRITERIA[by]
    ranked = [(s, v) for s in candidates if (v := value_of(s)) is not None]
    if ranked:
        best, value = max(ranked, key=lambda sv: (sign * sv[1], *_tie_break(sv[0])))
        return Selection(
            model=best.model,
            role=best.role,
            step=best.step,
            criterion=by,
            value=value,
            reason=f"{best_words} of {len(ranked)} candidate(s)",
        )
    return Selection(
        model=final.model,
        role=final.role,
        step=final.step,
        criterion=by,
        value=final.score if by == "eval_score" else None,
        reason=f"{none_words}; using the final model",
    )
