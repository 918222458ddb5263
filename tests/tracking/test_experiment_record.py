"""A successful run's record lands in its MLflow run: resolved params, estimate vs actual, artifacts, and the
record (result.json) learns where its tracked run is."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from estimate.core import EstimateVsActual
from flows.experiment import ExperimentRun
from tasks.record import DatasetFile, RunRecord
from tracking.settings import TrackingSettings, resolve_target
from tracking.tracker import experiment_id, open_client


def test_succeeded_logs_the_record_and_rewrites_result_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTPIPE_TRACKING_ENABLED", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("FTPIPE_TRACKING_FLUSH_INTERVAL_S", "0.05")
    target = resolve_target(TrackingSettings())
    assert target is not None
    experiment_id(open_client(target), target)  # a fresh store's migrations are not what this test is about
    warnings: list[str] = []
    run = ExperimentRun.prepare(model="local:tiny-chat", flow_run_id=None, warn=warnings.append)
    run.begin(
        name="tiny-chat-s42", tags={"model": "local:tiny-chat"}, params={"base_model": "local:tiny-chat"}
    )
    result_json = tmp_path / "result.json"
    now = datetime.now(UTC)
    record = RunRecord(
        job_id="ftjob_1",
        status="succeeded",
        base_model="local:tiny-chat",
        method="supervised",
        hyperparameters={"n_epochs": 3, "batch_size": 8},
        seed=42,
        idempotency_key="k",
        training=DatasetFile(
            role="training", path=tmp_path / "t.jsonl", sha256="ab", bytes=1, examples=300, file_id="f"
        ),
        started_at=now,
        finished_at=now,
        duration_s=1.0,
        output_dir=tmp_path,
        outputs={"result_json": result_json},
        estimate=EstimateVsActual(
            model="local:tiny-chat",
            counter="exact",
            exact=True,
            n_epochs=3,
            estimated_tokens=100,
            actual_tokens=98,
        ),
    )
    result_json.write_text(record.to_json())
    tracked = run.succeeded(record, {38: {"full_valid_loss": 2.5}})
    assert tracked.tracking is not None and not warnings
    assert RunRecord.model_validate_json(result_json.read_text()).tracking == tracked.tracking
    data = open_client(target).get_run(tracked.tracking.run_id)
    assert data.data.params["n_epochs"] == "3" and data.data.params["seed"] == "42"
    assert (
        data.data.metrics["estimate.estimated_tokens"] == 100
        and data.data.metrics["estimate.actual_tokens"] == 98
    )
    assert data.data.metrics["checkpoint.full_valid_loss"] == 2.5
    assert data.info.status == "FINISHED" and data.data.tags["job_id"] == "ftjob_1"
    assert [a.path for a in open_client(target).list_artifacts(tracked.tracking.run_id)] == ["result.json"]
