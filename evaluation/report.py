"""Presentation of eval results: the per-model table rows and the side-by-side Markdown."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evaluation.outcome import EvaluationReport
from evaluation.results import ModelSummary
from evaluation.scoring import SCORE_DEFINITION

if TYPE_CHECKING:  # pandas is imported by the one renderer that reads a frame: the run summary does not
    import pandas as pd

_CELL_CHARS = 300


def _num(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def summary_rows(summaries: list[ModelSummary], selected: str | None = None) -> list[dict[str, Any]]:
    """One JSON-ready row per model for the table artifact (best-first is the caller's order)."""
    return [
        {
            "model": s.model,
            "role": s.role + (f" (step {s.step})" if s.step is not None else ""),
            "selected": s.model == selected,
            "score": _num(s.score),
            "exact_match": _num(s.exact_match),
            "token_f1": _num(s.token_f1),
            "rougeL_f1": _num(s.rouge_l),
            "checks_pass_rate": _num(s.checks_pass_rate),
            "judge_grade": _num(s.judge_grade, 2),
            "full_valid_loss": _num(s.full_valid_loss),
            "answers": s.answers,
            "errors": s.errors,
            "smoke": {True: "passed", False: f"failed ({s.smoke_failed})", None: "-"}[s.smoke_passed],
            "latency_mean_s": _num(s.latency_mean_s, 3),
            "latency_p95_s": _num(s.latency_p95_s, 3),
        }
        for s in summaries
    ]


def _cell(text: Any) -> str:
    import pandas as pd

    if text is None or (isinstance(text, float) and pd.isna(text)) or text is pd.NA:
        return "-"
    flat = " ".join(str(text).split())
    flat = flat[:_CELL_CHARS] + ("..." if len(flat) > _CELL_CHARS else "")
    return flat.replace("|", "\\|") or "(empty)"


def side_by_side_markdown(frame: pd.DataFrame, base: str | None, candidate: str, n: int = 5) -> str:
    """The first ``n`` eval prompts: reference vs base answer vs candidate answer, with their scores."""
    import pandas as pd

    ev = frame[frame["set"] == "eval"]
    cases = list(dict.fromkeys(ev["case"].dropna().tolist()))[:n]
    lines = [
        f"### Base vs fine-tuned on {len(cases)} eval prompt(s)\n",
        f"Score: {SCORE_DEFINITION}.\n",
        "| prompt | reference | base answer (score) | "
        + f"`{candidate}` answer (score) |"
        + "\n|---|---|---|---|",
    ]
    for case in cases:
        rows = ev[ev["case"] == case]

        def answer(model: str | None, rows: pd.DataFrame = rows) -> str:
            hit = rows[rows["model"] == model]
            if model is None or not len(hit):
                return "-"
            row = hit.iloc[0]
            if not pd.isna(row["error"]):
                return f"error: {_cell(row['error'])}"
            return f"{_cell(row['answer'])} ({row['score']:.2f})"

        first = rows.iloc[0]
        lines.append(
            f"| {_cell(first['prompt'])} | {_cell(first['reference'])} | {answer(base)} | {answer(candidate)} |"
        )
    return "\n".join(lines) + "\n"


def score_line(summaries: list[ModelSummary]) -> str:
    """``model=score`` pairs for a log line."""
    return ", ".join(
        f"{s.model}={s.score:.4f}" if s.score is not None else f"{s.model}=n/a" for s in summaries
    )


def evaluation_summary_rows(report: EvaluationReport) -> list[tuple[str, str]]:
    """The run summary's evaluation lines: selected model, gate verdict, promotion."""
    rows = []
    if report.selected is not None:
        value = (
            ""
            if report.selected.value is None
            else f" {report.selected.criterion}={report.selected.value:.4f}"
        )
        rows.append(("selected model", f"{report.selected.model}{value} ({report.selected.reason})"))
    if report.calls or report.cached_answers:
        rows.append(
            ("eval answers", f"{report.calls} call(s), {report.cached_answers} answer(s) from the cache")
        )
    verdict = {True: "passed", False: "failed: " + "; ".join(report.gate_failures), None: "nothing to check"}
    rows.append(("gate", verdict[report.gate_passed]))
    if report.promotion:
        rows.append(("promotion", report.promotion))
    return rows


def score_table_text(report: EvaluationReport) -> str:
    """Per-model scores as aligned text for a terminal (the selected model starred)."""
    selected = report.selected.model if report.selected else None
    source = report.eval_set or report.smoke_set
    title = (
        f"evaluation: {source.size} {source.kind} prompt(s) from {source.source}" if source else "evaluation"
    )
    header = (
        "",
        "model",
        "role",
        report.score_name,
        "token_f1",
        "rougeL",
        "checks",
        "judge",
        "smoke",
        "errors",
    )
    lines: list[tuple[str, ...]] = [header]
    for s in report.models:
        lines.append(
            (
                "*" if s.model == selected else "",
                s.model,
                s.role + (f" {s.step}" if s.step is not None else ""),
                *(
                    "-" if v is None else f"{v:.{d}f}"
                    for v, d in (
                        (s.score, 4),
                        (s.token_f1, 3),
                        (s.rouge_l, 3),
                        (s.checks_pass_rate, 3),
                        (s.judge_grade, 2),
                    )
                ),
                {True: "ok", False: f"{s.smoke_failed} failed", None: "-"}[s.smoke_passed],
                str(s.errors),
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines)
    return f"{title}\n{text}\n  * selected; {report.score_name}: {report.score_definition}"
