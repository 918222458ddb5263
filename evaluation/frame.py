"""The eval frame (one row per prompt x model) and the per-model summary computed from it."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from evaluation.results import EvalModel, ModelSummary

FRAME_COLUMNS = (
    "set",
    "case",
    "case_id",
    "model",
    "role",
    "step",
    "prompt",
    "reference",
    "answer",
    "error",
    "cached",
    "latency_s",
    "output_tokens",
    "exact_match",
    "token_f1",
    "rouge_l",
    "checks_total",
    "checks_passed",
    "failed_checks",
    "score",
    "judge_grade",
)


def eval_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Typed frame from row dicts (missing metrics become NaN / NA)."""
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    for name in (
        "set",
        "case_id",
        "model",
        "role",
        "prompt",
        "reference",
        "answer",
        "error",
        "failed_checks",
    ):
        frame[name] = frame[name].astype("string")
    for name in ("case", "step", "output_tokens", "checks_total", "checks_passed", "judge_grade"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Int64")
    for name in ("latency_s", "exact_match", "token_f1", "rouge_l", "score"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    frame["cached"] = frame["cached"].astype("boolean")  # NA: no answer
    return frame


def _mean(series: pd.Series) -> float | None:
    values = series.dropna()
    return float(values.mean()) if len(values) else None


def summarize(frame: pd.DataFrame, models: list[EvalModel]) -> list[ModelSummary]:
    """Per-model means over the ``eval`` rows, plus the smoke verdict from the ``smoke`` rows."""
    out = []
    for m in models:
        rows = frame[frame["model"] == m.model]
        ev, smoke = rows[rows["set"] == "eval"], rows[rows["set"] == "smoke"]
        answered = ev[ev["error"].isna()]
        totals = answered["checks_total"].fillna(0)
        checks_total = int(totals.sum())
        latencies = answered["latency_s"].dropna()
        smoke_bad = smoke["error"].notna() | (
            smoke["checks_passed"].fillna(0) != smoke["checks_total"].fillna(0)
        )
        out.append(
            ModelSummary(
                model=m.model,
                role=m.role,
                step=m.step,
                answers=len(answered),
                errors=int(ev["error"].notna().sum()),
                score=_mean(answered["score"]),
                exact_match=_mean(answered["exact_match"]),
                token_f1=_mean(answered["token_f1"]),
                rouge_l=_mean(answered["rouge_l"]),
                checks_pass_rate=(int(answered["checks_passed"].fillna(0).sum()) / checks_total)
                if checks_total
                else None,
                judge_grade=_mean(answered["judge_grade"].astype("float64")),
                latency_mean_s=float(latencies.mean()) if len(latencies) else None,
                latency_p95_s=float(latencies.quantile(0.95)) if len(latencies) else None,
                full_valid_loss=m.full_valid_loss
                if m.full_valid_loss is not None and math.isfinite(m.full_valid_loss)
                else None,
                smoke_passed=bool(not smoke_bad.any()) if len(smoke) else None,
                smoke_failed=int(smoke_bad.sum()),
            )
        )
    return out
