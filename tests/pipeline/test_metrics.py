"""collect_metrics_task: typed frames for all six metrics, Parquet/CSV/PNG outputs, final metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from client.models import JobCreateRequest
from tasks.metrics import METRIC_COLUMNS, checkpoints_frame, collect_metrics_task, events_frame
from tests.pipeline.fake_api import SIX_METRICS, FakeMKA1


def _finished_job(fake: FakeMKA1) -> str:
    with fake.client() as c:
        job_id = c.jobs.create(JobCreateRequest(model="m", training_file="file-1")).id
        while not c.jobs.retrieve(job_id).is_terminal:
            pass
    return job_id


def test_frames_are_typed_and_written(fake: FakeMKA1, tmp_path: Path) -> None:
    assert set(METRIC_COLUMNS) == set(SIX_METRICS)
    job_id = _finished_job(fake)
    with fake.client() as c:
        result = collect_metrics_task.fn(c, job_id, tmp_path / "out")
    ck = pd.read_parquet(result.files["checkpoints_parquet"])
    assert len(ck) == 2 and list(ck["step"]) == [1, 2]
    for name in METRIC_COLUMNS:
        assert ck[name].dtype == "float64", name
        assert ck[name].notna().all()
    assert isinstance(ck["created_at"].dtype, pd.DatetimeTZDtype)
    ev = pd.read_parquet(result.files["events_parquet"])
    assert {"level", "type", "message", "step", *METRIC_COLUMNS} <= set(ev.columns)
    assert (ev["type"] == "metrics").sum() == 2
    assert all(ev[name].dtype == "float64" for name in METRIC_COLUMNS)
    assert pd.read_csv(result.files["checkpoints_csv"]).shape[0] == 2
    assert result.files["loss_curve_png"].read_bytes().startswith(b"\x89PNG")
    assert result.final_metrics["train_loss"] == 1.0 / 2  # the fake reports 1/(step+i); last step is 2
    assert set(result.final_metrics) == set(METRIC_COLUMNS)


def test_empty_job_gives_empty_typed_frames() -> None:
    ck, ev = checkpoints_frame([]), events_frame([])
    assert len(ck) == 0 and len(ev) == 0
    assert all(ck[n].dtype == "float64" and ev[n].dtype == "float64" for n in METRIC_COLUMNS)
