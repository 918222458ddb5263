"""Pick the best of the fine-tuned model and its checkpoints."""

from __future__ import annotations

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
    if by == "eval_score":
        scored = [s for s in candidates if s.complete]
        if scored:
            best = max(scored, key=lambda s: (s.score or 0.0, *_tie_break(s)))
            return Selection(
                model=best.model,
                role=best.role,
                step=best.step,
                criterion=by,
                value=best.score,
                reason=f"highest eval score of {len(scored)} candidate(s)",
            )
        reason = "no candidate answered every eval prompt; using the final model"
    else:
        with_loss = [s for s in candidates if s.full_valid_loss is not None]
        if with_loss:
            best = min(
                with_loss,
                key=lambda s: (s.full_valid_loss, -_tie_break(s)[0], -_tie_break(s)[1]),
            )
            return Selection(
                model=best.model,
                role=best.role,
                step=best.step,
                criterion=by,
                value=best.full_valid_loss,
                reason=f"lowest full_valid_loss of {len(with_loss)} candidate(s)",
            )
        reason = "no candidate reports full_valid_loss; using the final model"
    return Selection(
        model=final.model,
        role=final.role,
        step=final.step,
        criterion=by,
        value=final.score if by == "eval_score" else None,
        reason=reason,
    )
