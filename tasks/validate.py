"""Stage 1: validate the training (and validation) JSONL before anything is uploaded."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks import _runtime
from tasks.errors import DatasetInvalid
from tasks.progress import ProgressUpdate, publish
from validation import ValidationReport, validate_dataset

# Enough to locate the problems on one screen; the count says how many more there are.
MAX_SHOWN_ISSUES = 20


@dataclass(frozen=True)
class ValidationSummary:
    """What the stage reports: pass/fail, located messages (capped) and the dataset statistics."""

    ok: bool
    errors: list[str]
    warnings: list[str]
    n_errors: int
    n_warnings: int
    stats: dict[str, Any]


def cap_issues(issues: list[str], limit: int = MAX_SHOWN_ISSUES) -> list[str]:
    """First ``limit`` messages plus a ``... and N more`` line."""
    if len(issues) <= limit:
        return list(issues)
    return [*issues[:limit], f"... and {len(issues) - limit} more"]


def stats_dict(stats: Any) -> dict[str, Any]:
    """Flatten the validator's stats object (dataclass or pydantic) into plain JSON-able values."""
    if stats is None:
        return {}
    if isinstance(stats, BaseModel):
        raw = stats.model_dump(mode="json")
    elif dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        raw = dataclasses.asdict(stats)
    elif isinstance(stats, dict):
        raw = dict(stats)
    else:
        raw = {k: v for k, v in vars(stats).items() if not k.startswith("_")}
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in raw.items()}


def summarize(report: ValidationReport) -> ValidationSummary:
    """Turn a report into located strings + stats."""
    errors = [str(i) for i in report.errors]
    warnings = [str(i) for i in report.warnings]
    return ValidationSummary(
        ok=bool(report.ok),
        errors=cap_issues(errors),
        warnings=cap_issues(warnings),
        n_errors=len(errors),
        n_warnings=len(warnings),
        stats=stats_dict(report.stats),
    )


def _markdown(train: Path, validation: Path | None, s: ValidationSummary) -> str:
    lines = [
        f"### Dataset validation: {'passed' if s.ok else 'FAILED'}",
        "",
        f"- training file: `{train}`",
        f"- validation file: `{validation or '-'}`",
        f"- {s.n_errors} error(s), {s.n_warnings} warning(s)",
        "",
    ]
    for title, issues in (("Errors", s.errors), ("Warnings", s.warnings)):
        if issues:
            lines += [f"#### {title}", "", "```", *issues, "```", ""]
    return "\n".join(lines)


@task(name="validate-dataset", cache_policy=NO_CACHE, persist_result=False)
def validate_dataset_task(
    train_path: Path, validation_path: Path | None = None, n_epochs: int = 3
) -> ValidationSummary:
    """Validate the dataset; raise ``DatasetInvalid`` (listing located issues) when it has errors."""
    log = _runtime.run_logger()
    publish(ProgressUpdate("validate", f"validating {Path(train_path).name}"))
    report = validate_dataset(
        Path(train_path), Path(validation_path) if validation_path else None, n_epochs=n_epochs
    )
    summary = summarize(report)
    log.info(
        "validated %s%s: %s, %d error(s), %d warning(s)",
        train_path,
        f" + {validation_path}" if validation_path else "",
        "ok" if summary.ok else "INVALID",
        summary.n_errors,
        summary.n_warnings,
    )
    for warning in summary.warnings:
        log.warning("%s", warning)
    _runtime.markdown(
        _markdown(Path(train_path), validation_path, summary),
        key=_runtime.artifact_key("dataset-validation"),
        description="dataset validation report",
    )
    _runtime.table(
        [{"statistic": k, "value": str(v)} for k, v in summary.stats.items()],
        key=_runtime.artifact_key("dataset-stats"),
        description="dataset statistics",
    )
    if not summary.ok:
        raise DatasetInvalid(
            f"dataset invalid ({summary.n_errors} error(s)):\n" + "\n".join(summary.errors), summary.errors
        )
    return summary
