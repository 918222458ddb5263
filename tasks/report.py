"""What a run shows people: every pipeline artifact's Markdown and table rows, and the run summary.

Pure functions from data to strings (or JSON-ready rows): no I/O, no Prefect. Stages gather the data and
publish the result through ``tasks.runtime``; the CLI prints ``run_summary_text``. Feature reports with
their own data model keep their renderers beside it (``estimate/render.py``, ``evaluation/report.py``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from estimate.render import vs_actual_rows
from evaluation.report import evaluation_summary_rows, score_table_text

if TYPE_CHECKING:  # type-only: the stage modules import this one
    import pandas as pd

    from client.models import FineTuningJob
    from tasks.create_job import JobSpec
    from tasks.record import RunRecord
    from tasks.upload import UploadedFile
    from tasks.validate import ValidationSummary

# Artifact tables are for reading: the full frames are in the run's Parquet/CSV files.
MAX_TABLE_ROWS = 200
_SMOKE = {True: "passed", False: "failed", None: "skipped"}


def _yes_no(flag: bool, how: str | None = None, no: str | None = None) -> str:
    if flag:
        return f"yes ({how})" if how else "yes"
    return f"no ({no})" if no else "no"


def key_value_markdown(title: str, rows: Iterable[tuple[str, str]]) -> str:
    """A ``### title`` heading over a two-column Markdown table."""
    return f"### {title}\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


# ------------------------------------------------------------------------------------------ validation


def validation_markdown(train: Path, validation: Path | None, summary: ValidationSummary) -> str:
    """The dataset-validation report: verdict, counts, billed-token estimate, the located issues."""
    lines = [
        f"### Dataset validation: {'passed' if summary.ok else 'FAILED'}",
        "",
        f"- training file: `{train}`",
        f"- validation file: `{validation or '-'}`",
        f"- {summary.n_errors} error(s), {summary.n_warnings} warning(s)",
        f"- estimated billed tokens: {summary.estimated_billed_tokens} (characters/4 heuristic;"
        " the pre-flight estimate counts them with the model's tokenizer)",
        "",
    ]
    for title, issues in (("Errors", summary.errors), ("Warnings", summary.warnings)):
        if issues:
            lines += [f"#### {title}", "", "```", *issues, "```", ""]
    return "\n".join(lines)


def validation_stats_rows(summary: ValidationSummary) -> list[dict[str, Any]]:
    """One row of headline statistics per dataset file."""
    return [{"file": role, **values} for role, values in summary.stats.items()]


# ---------------------------------------------------------------------------------------- upload, job


def upload_markdown(role: str, path: Path, uploaded: UploadedFile) -> str:
    """Where a dataset file went: its id, server-side name, size, hash and whether it was reused."""
    return key_value_markdown(
        f"{role} file",
        [
            ("source", f"`{path}`"),
            ("file id", f"`{uploaded.file_id}`"),
            ("server name", f"`{uploaded.filename}`"),
            ("bytes", str(uploaded.bytes)),
            ("sha256", f"`{uploaded.sha256}`"),
            ("reused", _yes_no(uploaded.reused, uploaded.how, "uploaded")),
            ("server sha256", _server_sha256(uploaded.sha256_verified)),
        ],
    )


def _server_sha256(verified: bool | None) -> str:
    if verified is None:
        return "not reported by the server (matched by name and size)"
    return "verified: equals the local sha256"


def job_url(base_url: str, job_id: str) -> str:
    """The API URL of a fine-tuning job (the link artifact's target)."""
    return f"{base_url.rstrip('/')}/fine_tuning/jobs/{job_id}"


def job_link_text(job_id: str) -> str:
    """The link artifact's text."""
    return f"fine-tuning job {job_id}"


def job_markdown(job: FineTuningJob, spec: JobSpec, key: str, attached: bool, how: str) -> str:
    """The job this run follows, the inputs that define it, and whether it was created or attached to."""
    return key_value_markdown(
        f"Fine-tuning job `{job.id}`",
        [
            ("status", str(job.status)),
            ("model", f"`{spec.model}`"),
            ("training file", f"`{spec.training_file}`"),
            ("validation file", f"`{spec.validation_file or '-'}`"),
            ("method", str(spec.method.type)),
            ("suffix", spec.suffix or "-"),
            ("seed", str(spec.seed)),
            ("idempotency key", f"`{key}`"),
            ("attached", _yes_no(attached, how, "created")),
        ],
    )


def progress_description(job_id: str, status: object, step: int | None, total: int | None) -> str:
    """The progress artifact's line, e.g. ``job ftjob-1: running step 3/10``."""
    where = "" if step is None else (f" step {step}/{total}" if total else f" step {step}")
    return f"job {job_id}: {status}{where}"


def reattach_summary(
    job_id: str,
    status: object,
    step: int | None,
    total: int | None,
    train_loss: float | None,
    valid_loss: float | None,
    terminal: bool,
) -> str:
    """The one line that stands for a re-attached job's past events.

    E.g. ``re-attached to ftjob-1 (succeeded, 120 steps, final train loss 1.2300, valid 1.3100)``.
    """
    parts = [str(status)]
    if step is not None:
        parts.append(f"{step} steps" if terminal or not total else f"step {step}/{total}")
    final = "final " if terminal else ""
    if train_loss is not None:
        parts.append(f"{final}train loss {train_loss:.4f}")
    if valid_loss is not None:
        parts.append(
            f"valid {valid_loss:.4f}" if train_loss is not None else f"{final}valid loss {valid_loss:.4f}"
        )
    return f"re-attached to {job_id} ({', '.join(parts)})"


def unchanged_run_line(record: RunRecord, force_flag: str) -> str:
    """The line an unchanged re-run prints over the recorded run's summary instead of running the flow.

    E.g. ``unchanged since run tiny-chat-s42 of 2026-12-02 01:40 UTC (http://...): job ftjob-1 still succeeded,
    nothing was run; --rerun runs the flow again``.
    """
    name = record.flow_run_name or record.job_id
    when = record.finished_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    link = f" ({record.flow_run_url})" if record.flow_run_url else ""
    return (
        f"unchanged since run {name} of {when}{link}: job {record.job_id} still {record.status}, "
        f"nothing was run; {force_flag} runs the flow again"
    )


# --------------------------------------------------------------------------------------------- metrics


def frame_records(frame: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS) -> list[dict[str, Any]]:
    """A frame's first rows as a JSON-ready table artifact: timestamps as text, missing values as None."""
    import pandas as pd  # only the metrics stage pays for pandas

    shown = frame.head(max_rows).copy()
    if "created_at" in shown:
        shown["created_at"] = shown["created_at"].astype("string")
    return [
        {str(k): (None if pd.isna(v) else v) for k, v in row.items()}
        for row in shown.astype(object).to_dict("records")
    ]


def loss_curve_markdown(job_id: str, png: bytes, saved_to: Path | None = None, note: str = "") -> str:
    """The loss-curve artifact: the PNG inline (artifacts cannot reference local files)."""
    encoded = base64.b64encode(png).decode()
    where = f"Saved to `{saved_to}`.\n" if saved_to else ""
    return f"### Loss curve of `{job_id}`\n\n{note}![loss curve](data:image/png;base64,{encoded})\n\n{where}"


# ------------------------------------------------------------------------------------------ run summary


def run_summary_rows(record: RunRecord) -> list[tuple[str, str]]:
    """The run summary as (field, value) pairs: the one list both the artifact and the terminal show."""
    rows = [
        ("job id", record.job_id),
        ("status", record.status),
        ("base model", f"{record.base_model} ({record.method}, seed {record.seed})"),
        ("hyperparameters", ", ".join(f"{k}={v}" for k, v in record.hyperparameters.items()) or "-"),
        ("fine-tuned model", str(record.fine_tuned_model)),
        *((name, f"{value:.4f}") for name, value in record.final_metrics.items()),
        ("trained tokens", str(record.trained_tokens)),
        *(vs_actual_rows(record.estimate) if record.estimate else []),
        ("training file", record.training_file_id + (" (reused)" if record.training.reused else "")),
        ("validation file", _validation_file(record)),
        ("attached to existing job", _yes_no(record.job_attached)),
        ("smoke test", _SMOKE[record.smoke_passed]),
    ]
    if record.smoke_answers:
        first = record.smoke_answers[0]
        rows.append(("smoke answer", f"{first['prompt']!r} -> {first['output'].strip()!r}"))
    rows += evaluation_summary_rows(record.evaluation) if record.evaluation else []
    rows += [("duration", f"{record.duration_s:.1f}s"), ("output dir", str(record.output_dir))]
    return rows


def _validation_file(record: RunRecord) -> str:
    if record.validation is None:
        return "-"
    return record.validation.file_id + (" (reused)" if record.validation.reused else "")


def run_summary_markdown(record: RunRecord) -> str:
    """The run-summary artifact."""
    return key_value_markdown("Fine-tune result", [(k, _md_cell(v)) for k, v in run_summary_rows(record)])


def _md_cell(value: str) -> str:
    # A pipe would end the cell early and a newline the row (a smoke answer may hold either).
    return value.replace("|", "\\|").replace("\n", " ")


def run_summary_text(record: RunRecord) -> str:
    """The run summary for a terminal: a title over aligned ``field  value`` lines."""
    rows = run_summary_rows(record)
    width = max(len(k) for k, _ in rows)
    scores = score_table_text(record.evaluation) + "\n\n" if record.evaluation else ""
    text = scores + "fine-tune result\n" + "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)
    return text + "".join(f"\n{line}" for line in next_commands(record))


def next_commands(record: RunRecord) -> list[str]:
    """What to run after the summary: try the model, look at the job."""
    lines = [f"try it:   ftpipe chat {record.fine_tuned_model}"] if record.fine_tuned_model else []
    return [*lines, f"the job:  ftpipe jobs show {record.job_id}"]
