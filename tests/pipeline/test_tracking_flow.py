"""The fine-tune flow with experiment tracking on: MLflow run contents, Prefect name/tags/events, and a
tracking server that is not there (the run still succeeds, with one warning)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client

from flows.backend_runtime import use_connection
from flows.fine_tune import fine_tune
from flows.params import FineTuneParams
from tests.pipeline.fake_api import FakeMKA1
from tests.pipeline.flow_params import micro_chat_params
from tracking.settings import TrackingSettings, resolve_target
from tracking.tracker import experiment_id, open_client

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _params(dataset_dir: Path, tmp_path: Path, **kw: Any) -> FineTuneParams:
    return micro_chat_params(dataset_dir, tmp_path, **{"suffix": "bot", "seed": 7, "n_epochs": 2, **kw})


def _track_to(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    monkeypatch.setenv("FTPIPE_TRACKING_ENABLED", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("FTPIPE_TRACKING_FLUSH_INTERVAL_S", "0.05")
    if uri.startswith("sqlite:"):
        # Create the store first: a fake job ends in a second, before a fresh store's migrations on a
        # loaded machine (the end-of-run wait is bounded; the real sample job trains for a minute).
        target = resolve_target(TrackingSettings())
        assert target is not None
        experiment_id(open_client(target), target)


async def _flow_run(flow_run_id: Any) -> Any:
    async with get_client() as client:
        return await client.read_flow_run(flow_run_id)


def test_run_is_tracked_named_tagged_and_announced(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _track_to(monkeypatch, uri)
    emitted: list[dict[str, Any]] = []
    monkeypatch.setattr("prefect.events.emit_event", lambda **kw: emitted.append(kw))
    with use_connection(fake.connection()):
        state = fine_tune(
            **_params(dataset_dir, tmp_path, integrations=[{"type": "wandb"}]).flow_arguments(),
            return_state=True,
        )
    record = state.result()
    assert record.tracking is not None and record.tracking.tracking_uri == uri
    client = open_client(resolve_target(TrackingSettings(enabled=True)))  # type: ignore[arg-type]
    run = client.get_run(record.tracking.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "micro-chat-bot-s7"
    params = run.data.params
    assert params["base_model"] == "local:micro-chat" and params["seed"] == "7" and params["n_epochs"] == "2"
    assert params["training_sha256"] == record.training.sha256
    tags = run.data.tags
    assert tags["model"] == "local:micro-chat" and tags["job_id"] == record.job_id
    assert tags["dataset"] == dataset_dir.name and tags["flow_run_id"] == record.flow_run_id
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]  # one point per logged step, including the last
    assert history[-1].value == record.final_metrics["train_loss"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "checkpoint.full_valid_loss")] == [
        1,
        2,
    ]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"result.json", "metrics.parquet", "loss_curve.png"} <= artifacts
    # The job was created with the integrations passed through.
    assert fake.jobs[record.job_id]["integrations"] == record.integrations == [{"type": "wandb"}]
    # Prefect: the run is named and tagged from the config; the terminal state is an event.
    flow_run = asyncio.run(_flow_run(state.state_details.flow_run_id))
    assert flow_run.name == "micro-chat-bot-s7"
    assert {"model:local:micro-chat", "method:supervised", f"dataset:{dataset_dir.name}"} <= set(
        flow_run.tags
    )
    (event,) = [e for e in emitted if e["event"].startswith("ftpipe.job.")]
    assert event["event"] == "ftpipe.job.succeeded"
    assert event["payload"]["job_id"] == record.job_id and event["payload"]["model"] == "local:micro-chat"
    assert event["payload"]["metrics"]["train_loss"] == record.final_metrics["train_loss"]


def test_failed_job_is_announced_and_the_tracked_run_failed(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _track_to(monkeypatch, f"sqlite:///{tmp_path / 'mlflow.db'}")
    emitted: list[dict[str, Any]] = []
    monkeypatch.setattr("prefect.events.emit_event", lambda **kw: emitted.append(kw))
    fake.timeline = ["validating_files", "queued", "running", "failed"]
    with use_connection(fake.connection()):
        state = fine_tune(**_params(dataset_dir, tmp_path).flow_arguments(), return_state=True)
    assert state.is_failed()
    (event,) = [e for e in emitted if e["event"].startswith("ftpipe.job.")]
    assert event["event"] == "ftpipe.job.failed" and "boom" in event["payload"]["error"]
    client = open_client(resolve_target(TrackingSettings(enabled=True)))  # type: ignore[arg-type]
    (run,) = client.search_runs([client.get_experiment_by_name("ftpipe").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["status"] == "failed"


def test_unreachable_tracking_server_warns_once_and_the_run_succeeds(
    fake: FakeMKA1,
    dataset_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _track_to(monkeypatch, f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING), use_connection(fake.connection()):
        record = fine_tune(**_params(dataset_dir, tmp_path).flow_arguments())
    assert record.status == "succeeded" and record.tracking is None
    warnings = [r.getMessage() for r in caplog.records if "tracking is off" in r.getMessage()]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0]


def test_a_run_created_with_its_tags_needs_no_tagging_round_trip(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `ftpipe run` creates the flow run with the tags the flow would add (flows.experiment.creation_tags):
    # the flow then reads and updates nothing; a run created without them (a deployment) still gets them.
    from prefect import tags
    from prefect.client.orchestration import SyncPrefectClient

    from flows.experiment import creation_tags

    reads: list[Any] = []  # the flow's own reads (tag_prefect_run's), not the engine's
    updates: list[Any] = []
    read, update = SyncPrefectClient.read_flow_run, SyncPrefectClient.update_flow_run

    def recording_read(self: SyncPrefectClient, flow_run_id: Any) -> Any:
        if sys._getframe(1).f_code.co_name == "tag_prefect_run":
            reads.append(flow_run_id)
        return read(self, flow_run_id)

    def recording_update(self: SyncPrefectClient, flow_run_id: Any, **kw: Any) -> Any:
        updates.append(kw.get("tags"))
        return update(self, flow_run_id, **kw)

    monkeypatch.setattr(SyncPrefectClient, "read_flow_run", recording_read)
    monkeypatch.setattr(SyncPrefectClient, "update_flow_run", recording_update)
    params = _params(dataset_dir, tmp_path)
    wanted = set(creation_tags(params))
    assert wanted == {"model:local:micro-chat", "method:supervised", f"dataset:{dataset_dir.name}"}
    with use_connection(fake.connection()), tags(*creation_tags(params)):
        state = fine_tune(**params.flow_arguments(), return_state=True)
    assert reads == [] and updates == []
    assert wanted <= set(asyncio.run(_flow_run(state.state_details.flow_run_id)).tags)
    with use_connection(fake.connection()):
        other = _params(dataset_dir, tmp_path, metadata={"run": "deployed"})
        fine_tune(**other.flow_arguments(), return_state=True)
    assert len(reads) == 1 and len(updates) == 1 and wanted <= set(updates[0])
