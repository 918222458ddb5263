"""Stage 1: validate the training (and validation) JSONL before anything is uploaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import report, runtime
from tasks.errors import DatasetInvalid
from tasks.progress import ProgressUpdate, publish
from validation import DatasetReport, DatasetStats, validate_dataset

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
    stats: dict[str, dict[str, Any]]
    estimated_billed_tokens: int


def cap_issues(issues: list[str], limit: int = MAX_SHOWN_ISSUES, total: int | None = None) -> list[str]:
    """First ``limit`` messages plus a ``... and N more`` line (``total`` counts issues not even kept)."""
    total = len(issues) if total is None else max(total, len(issues))
    shown = issues[:limit]
    if total <= len(shown):
        return list(shown)
    return [*shown, f"... and {total - len(shown)} more"]


STAT_FIELDS = (
    "examples",
    "messages",
    "min_tokens",
    "mean_tokens",
    "max_tokens",
    "total_tokens",
    "examples_over_limit",
    "n_epochs",
    "estimated_billed_tokens",
)


def stats_dict(stats: DatasetStats) -> dict[str, Any]:
    """The headline statistics of one file (tokens per example, billed-token estimate = tokens x epochs)."""
    return {
        k: (round(v, 1) if isinstance(v, float) else v)
        for k, v in ((f, getattr(stats, f)) for f in STAT_FIELDS)
    }


def summarize(dataset: DatasetReport) -> ValidationSummary:
    """Turn a dataset report into located strings + per-file stats."""
    reports = [("training", dataset.train)] + (
        [("validation", dataset.validation)] if dataset.validation else []
    )
    n_errors = sum(r.error_count_total for _, r in reports)
    n_warnings = sum(r.warning_count_total for _, r in reports) + dataset.overlap_count_total
    stats = {role: stats_dict(r.stats) for role, r in reports}
    return ValidationSummary(
        ok=bool(dataset.ok),
        errors=cap_issues([str(i) for i in dataset.errors], total=n_errors),
        warnings=cap_issues([str(i) for i in dataset.warnings], total=n_warnings),
        n_errors=n_errors,
        n_warnings=n_warnings,
        stats=stats,
        estimated_billed_tokens=dataset.estimated_billed_tokens,
    )


@task(name="validate-dataset", cache_policy=NO_CACHE, persist_result=False)
def validate_dataset_task(
    train_path: Path, validation_path: Path | None = None, n_epochs: int | Literal["auto"] = "auto"
) -> ValidationSummary:
    """Validate the dataset; raise ``DatasetInvalid`` (listing located issues) when it has errors."""
    log = runtime.run_logger()
    publish(ProgressUpdate("validate", f"validating {Path(train_path).name}"))
    dataset = validate_dataset(
        Path(train_path), Path(validation_path) if validation_path else None, n_epochs=n_epochs
    )
    summary = summarize(dataset)
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
    runtime.markdown(
        report.validation_markdown(Path(train_path), validation_path, summary),
        key=runtime.artifact_key("dataset-validation"),
        description="dataset validation report",
    )
    runtime.table(
        report.validation_stats_rows(summary),
        key=runtime.artifact_key("dataset-stats"),
        description="dataset statistics",
    )
    if not summary.ok:
        raise DatasetInvalid(
            f"dataset invalid ({summary.n_errors} error(s)):\n" + "\n".join(summary.errors), summary.errors
        )
    return summary
