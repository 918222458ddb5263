"""collect_metrics_task and the frames: one typed row per logged step, checkpoints, messages, final metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from client.models import FineTuningJobCheckpoint, FineTuningJobEvent, JobCreateRequest
from tasks.metrics import (
    METRIC_COLUMNS,
    STEP_COLUMNS,
    checkpoints_frame,
    collect_metrics_task,
    events_frame,
    final_metrics,
    metrics_frame,
)
from tests.pipeline.fake_api import SIX_METRICS, FakeMKA1


def _finished_job(fake: FakeMKA1) -> str:
    with fake.client() as c:
        job_id = c.jobs.create(JobCreateRequest(model="m", training_file="file-1")).id
        while not c.jobs.retrieve(job_id).is_terminal:
            pass
    return job_id


def _metrics_event(i: int, **data: object) -> FineTuningJobEvent:
    return FineTuningJobEvent(id=f"ev-{i}", created_at=1_700_000_000 + i, type="metrics", data=data)


def _message(i: int, text: str, **data: object) -> FineTuningJobEvent:
    return FineTuningJobEvent(id=f"ev-{i}", created_at=1_700_000_000 + i, message=text, data=data or None)


def test_frames_are_typed_and_written(fake: FakeMKA1, tmp_path: Path) -> None:
    assert set(METRIC_COLUMNS) == set(SIX_METRICS)
    job_id = _finished_job(fake)
    with fake.client() as c:
        result = collect_metrics_task.fn(c, job_id, tmp_path / "out")
    assert result.output_dir.is_absolute() and all(p.is_absolute() for p in result.files.values())
    ck = pd.read_parquet(result.files["checkpoints_parquet"])
    assert len(ck) == 2 and list(ck["step"]) == [1, 2]
    for name in METRIC_COLUMNS:
        assert ck[name].dtype == "float64", name
        assert ck[name].notna().all()
    assert isinstance(ck["created_at"].dtype, pd.DatetimeTZDtype)
    steps = pd.read_parquet(result.files["metrics_parquet"])
    assert list(steps.columns[: len(STEP_COLUMNS)]) == list(STEP_COLUMNS)
    assert list(steps["step"]) == [1, 2] and str(steps["step"].dtype) == "Int64"
    assert list(steps["total_steps"]) == [fake.total_steps] * 2
    assert all(steps[name].dtype == "float64" for name in METRIC_COLUMNS)
    ev = pd.read_parquet(result.files["events_parquet"])
    assert "metrics" not in set(ev["type"]) and ev["message"].str.contains("status").any()
    assert pd.read_csv(result.files["metrics_csv"]).shape[0] == 2
    assert result.files["loss_curve_png"].read_bytes().startswith(b"\x89PNG")
    assert result.final_metrics["train_loss"] == 1.0 / 2  # the fake reports 1/(step+i); last step is 2
    assert set(METRIC_COLUMNS) <= set(result.final_metrics)
    assert result.total_steps == fake.total_steps and result.n_steps_logged == 2


def test_metrics_frame_one_row_per_step_with_schedule_columns() -> None:
    events = [
        _message(0, "Training started", total_steps=14),
        _metrics_event(1, step=10, epoch=0.7, train_loss=2.5, learning_rate=1e-3, total_steps=14),
        _message(2, "Checkpoint saved at step 14", step=14, train_loss=2.0),
        _metrics_event(
            3, step=14, epoch=1.0, train_loss=2.0, valid_loss=2.2, learning_rate=5e-4, total_steps=14
        ),
        # a resumed job reports step 14 again: the later point wins, still one row
        _metrics_event(
            4, step=14, epoch=1.0, train_loss=1.9, learning_rate=5e-4, total_steps=14, tokens_seen=99
        ),
        _metrics_event(5, train_loss=3.0),  # no step: not a point
    ]
    frame = metrics_frame(events)
    assert list(frame["step"]) == [10, 14]
    assert list(frame["train_loss"]) == [2.5, 1.9]
    assert list(frame["epoch"]) == [0.7, 1.0] and frame["learning_rate"].iloc[0] == 1e-3
    assert frame["tokens_seen"].dtype == "float64"  # unknown numeric keys kept as typed columns
    assert frame["valid_loss"].isna().all()  # the surviving step-14 point had none
    messages = events_frame(events)
    assert list(messages["message"]) == ["Training started", "Checkpoint saved at step 14"]
    assert messages["data"].iloc[1] == '{"step": 14, "train_loss": 2.0}'


def test_final_metrics_say_what_they_average_over() -> None:
    steps = metrics_frame(
        [
            _metrics_event(1, step=10, train_loss=2.5, valid_loss=2.6, learning_rate=1e-3),
            _metrics_event(2, step=14, train_loss=2.0, valid_loss=2.1, learning_rate=5e-4),
        ]
    )
    ck = checkpoints_frame(
        [
            FineTuningJobCheckpoint(
                id="ck-1",
                step_number=7,
                metrics={"step": 7, "train_loss": 2.8, "full_valid_loss": 2.7},  # type: ignore[arg-type]
            ),
            FineTuningJobCheckpoint(
                id="ck-2",
                step_number=14,
                metrics={"step": 14, "train_loss": 2.2, "full_valid_loss": 2.3},  # type: ignore[arg-type]
            ),
        ]
    )
    values, definitions = final_metrics(ck, steps)
    assert (
        values["train_loss"] == 2.0 and values["full_valid_loss"] == 2.3 and values["learning_rate"] == 5e-4
    )
    assert definitions["train_loss"].source == "metrics_event" and definitions["train_loss"].step == 14
    assert definitions["train_loss"].over.startswith("steps 11-14 (the window")
    assert definitions["valid_loss"].over == "the validation sample at step 14"
    assert definitions["full_valid_loss"].source == "checkpoint"
    assert definitions["full_valid_loss"].over == "the whole validation file at the checkpoint at step 14"
    # Without metrics events the checkpoint's epoch mean is the final train_loss, and says so.
    values, definitions = final_metrics(ck, metrics_frame([]))
    assert values["train_loss"] == 2.2
    assert definitions["train_loss"].over == "steps 8-14 (the epoch ending at that checkpoint)"


def test_empty_job_gives_empty_typed_frames() -> None:
    ck, steps, ev = checkpoints_frame([]), metrics_frame([]), events_frame([])
    assert len(ck) == 0 and len(steps) == 0 and len(ev) == 0
    assert all(ck[n].dtype == "float64" and steps[n].dtype == "float64" for n in METRIC_COLUMNS)
    assert str(steps["step"].dtype) == "Int64"
    assert final_metrics(ck, steps) == ({}, {})


@pytest.mark.parametrize("bad", [True, "3", None, float("nan")])
def test_non_numeric_step_is_not_a_point(bad: object) -> None:
    assert len(metrics_frame([_metrics_event(1, step=bad, train_loss=1.0)])) == 0
