"""tasks.report: every artifact's Markdown/rows and the run summary, from plain data."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from client.models import FineTuningJob, Method
from tasks import report
from tasks.create_job import JobSpec
from tasks.record import DatasetFile, RunRecord
from tasks.upload import UploadedFile
from tasks.validate import ValidationSummary


def _record(**overrides: object) -> RunRecord:
    values: dict[str, object] = {
        "job_id": "ftjob-1",
        "status": "succeeded",
        "base_model": "local:micro-chat",
        "method": "supervised",
        "hyperparameters": {"n_epochs": 2, "batch_size": 4},
        "seed": 7,
        "fine_tuned_model": "ft:local:micro-chat:abc",
        "trained_tokens": 1234,
        "idempotency_key": "k" * 64,
        "training": DatasetFile(
            role="training",
            path=Path("/d/train.jsonl"),
            sha256="a" * 64,
            bytes=10,
            examples=3,
            file_id="file-t",
        ),
        "validation": DatasetFile(
            role="validation",
            path=Path("/d/validation.jsonl"),
            sha256="b" * 64,
            bytes=5,
            examples=2,
            file_id="file-v",
            reused=True,
        ),
        "started_at": datetime(2026, 1, 1, tzinfo=UTC),
        "finished_at": datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
        "duration_s": 61.25,
        "final_metrics": {"train_loss": 0.123456, "valid_loss": 1.5},
        "output_dir": Path("/runs/ftjob-1"),
        "smoke_passed": True,
        "smoke_answers": [{"prompt": "a | b?", "output": " yes\nreally "}],
    }
    values.update(overrides)
    return RunRecord.model_validate(values)


def test_run_summary_rows_hold_every_fact_once() -> None:
    rows = dict(report.run_summary_rows(_record()))
    assert rows["job id"] == "ftjob-1" and rows["status"] == "succeeded"
    assert rows["base model"] == "local:micro-chat (supervised, seed 7)"
    assert rows["hyperparameters"] == "n_epochs=2, batch_size=4"
    assert rows["train_loss"] == "0.1235" and rows["valid_loss"] == "1.5000"
    assert rows["training file"] == "file-t" and rows["validation file"] == "file-v (reused)"
    assert rows["attached to existing job"] == "no" and rows["smoke test"] == "passed"
    assert rows["smoke answer"] == "'a | b?' -> 'yes\\nreally'"
    assert rows["duration"] == "61.2s" and rows["output dir"] == "/runs/ftjob-1"


def test_run_summary_optional_parts() -> None:
    rows = dict(
        report.run_summary_rows(
            _record(validation=None, smoke_passed=None, smoke_answers=[], job_attached=True)
        )
    )
    assert rows["validation file"] == "-" and rows["smoke test"] == "skipped"
    assert rows["attached to existing job"] == "yes" and "smoke answer" not in rows
    assert dict(report.run_summary_rows(_record(hyperparameters={})))["hyperparameters"] == "-"


def test_terminal_and_artifact_show_the_same_rows() -> None:
    record = _record(smoke_answers=[{"prompt": "p", "output": "x | y"}])
    rows = report.run_summary_rows(record)
    text = report.run_summary_text(record).splitlines()
    assert text[0] == "fine-tune result" and len(text) == 1 + len(rows) + 2
    value_column = {line.index(v) for line, (_, v) in zip(text[1:-2], rows, strict=True)}
    assert text[-2:] == [
        f"try it:   ftpipe chat {record.fine_tuned_model}",
        "the job:  ftpipe jobs show ftjob-1",
    ]
    assert len(value_column) == 1  # values aligned in one column
    md = report.run_summary_markdown(record).splitlines()
    assert md[0] == "### Fine-tune result" and md[2:4] == ["| | |", "|---|---|"]
    assert len(md) == 4 + len(rows)
    assert "| smoke answer | 'p' -> 'x \\| y' |" in md  # a pipe in an answer does not split the cell


def test_validation_markdown_and_stats_rows() -> None:
    summary = ValidationSummary(
        ok=False,
        errors=["train.jsonl:3: messages: required"],
        warnings=[],
        n_errors=1,
        n_warnings=0,
        stats={"training": {"examples": 3}, "validation": {"examples": 2}},
        estimated_billed_tokens=99,
    )
    md = report.validation_markdown(Path("t.jsonl"), None, summary)
    assert md.startswith("### Dataset validation: FAILED")
    assert "- validation file: `-`" in md and "- 1 error(s), 0 warning(s)" in md and "tokens: 99" in md
    assert "#### Errors\n\n```\ntrain.jsonl:3: messages: required\n```" in md and "Warnings" not in md
    assert report.validation_stats_rows(summary) == [
        {"file": "training", "examples": 3},
        {"file": "validation", "examples": 2},
    ]


def test_upload_and_job_markdown() -> None:
    up = UploadedFile(
        file_id="file-1", filename="train-abc.jsonl", sha256="c" * 64, bytes=42, reused=True, how="index"
    )
    md = report.upload_markdown("training", Path("/d/train.jsonl"), up)
    assert (
        md.startswith("### training file\n") and "| reused | yes (index) |" in md and "| bytes | 42 |" in md
    )
    assert "| server sha256 | not reported by the server (matched by name and size) |" in md
    fresh = UploadedFile("file-2", "v.jsonl", "d" * 64, 1, reused=False, how="uploaded", sha256_verified=True)
    fresh_md = report.upload_markdown("validation", Path("v.jsonl"), fresh)
    assert (
        "| reused | no (uploaded) |" in fresh_md
        and "| server sha256 | verified: equals the local sha256 |" in fresh_md
    )

    spec = JobSpec(
        model="m",
        training_file="file-1",
        validation_file=None,
        method=Method(type="supervised"),
        suffix=None,
        seed=3,
    )
    job = FineTuningJob.model_validate({"id": "ftjob-9", "object": "fine_tuning.job", "status": "queued"})
    md = report.job_markdown(job, spec, "key-1", attached=False, how="created")
    assert md.startswith("### Fine-tuning job `ftjob-9`")
    for row in (
        "| status | queued |",
        "| validation file | `-` |",
        "| method | supervised |",
        "| suffix | - |",
    ):
        assert row in md
    assert "| idempotency key | `key-1` |" in md and "| attached | no (created) |" in md
    assert "| attached | yes (metadata-filter) |" in report.job_markdown(
        job, spec, "k", True, "metadata-filter"
    )
    assert report.job_url("http://h/api/v1/llm/", "ftjob-9") == "http://h/api/v1/llm/fine_tuning/jobs/ftjob-9"


def test_progress_description() -> None:
    assert report.progress_description("j", "queued", None, None) == "job j: queued"
    assert report.progress_description("j", "running", 3, None) == "job j: running step 3"
    assert report.progress_description("j", "running", 3, 10) == "job j: running step 3/10"


def test_frame_records_are_json_ready_and_capped() -> None:
    frame = pd.DataFrame(
        {
            "step": pd.Series([1, None, 3], dtype="Int64"),
            "train_loss": [0.5, float("nan"), 0.25],
            "created_at": pd.to_datetime([1_700_000_000, None, 1_700_000_002], unit="s", utc=True),
        }
    )
    rows = report.frame_records(frame)
    assert rows[1] == {"step": None, "train_loss": None, "created_at": None}
    assert rows[0]["step"] == 1 and rows[0]["created_at"] == "2023-11-14 22:13:20+00:00"
    assert len(report.frame_records(frame, max_rows=2)) == 2


def test_loss_curve_markdown_inlines_the_png() -> None:
    md = report.loss_curve_markdown("ftjob-1", b"\x89PNG-bytes", Path("/o/loss.png"), note="note. ")
    encoded = md.split("base64,")[1].split(")")[0]
    assert base64.b64decode(encoded) == b"\x89PNG-bytes"
    assert (
        md.startswith("### Loss curve of `ftjob-1`\n\nnote. ![loss curve]")
        and "Saved to `/o/loss.png`." in md
    )
    assert "Saved to" not in report.loss_curve_markdown("j", b"x")


def test_run_summary_shows_the_estimate_beside_the_actuals() -> None:
    estimate = {
        "model": "local:micro-chat",
        "counter": "tokenizer of local:micro-chat",
        "exact": True,
        "n_epochs": 2,
        "estimated_tokens": 1234,
        "actual_tokens": 1234,
        "token_error": 0.0,
        "currency": "EUR",
        "price_per_million_tokens": 2.5,
        "price_source": "API cluster_default",
        "estimated_cost": 0.003085,
        "actual_cost": 0.003085,
        "estimated_duration_s": 50.0,
        "actual_duration_s": 40.0,
        "duration_error": 0.25,
    }
    rows = dict(report.run_summary_rows(_record(estimate=estimate)))
    assert rows["estimated tokens"] == "1,234 (actual 1,234, +0.0%)"
    assert rows["cost"] == "estimated 0.00 EUR, actual 0.00 EUR at 2.50 EUR per 1M (API cluster_default)"
    assert rows["training time"] == "estimated ~50 s, actual 40 s, +25.0%"
    assert "estimated tokens" not in dict(report.run_summary_rows(_record()))
