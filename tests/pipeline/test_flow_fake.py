"""The fine-tune flow under a Prefect test harness against the in-memory fake API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.exceptions import CancelledRun
from prefect.logging.handlers import APILogHandler

from cli.main import main
from client.errors import BadRequestError
from flows.backend_runtime import use_connection
from flows.cancellation import on_cancellation_hook
from flows.fine_tune import fine_tune
from flows.params import FineTuneParams
from tasks.create_job import record_job
from tasks.errors import DatasetInvalid
from tasks.record import RunRecord
from tasks.state import JOBS_FILE
from tasks.upload import sha256_file, upload_file_task
from tests.pipeline.conftest import write_jsonl
from tests.pipeline.fake_api import SERVER_ID, FakeMKA1
from tests.pipeline.flow_params import micro_chat_params

pytestmark = pytest.mark.usefixtures("prefect_harness")
SECRET = "sk-fake-secret-key"


def _params(dataset_dir: Path, tmp_path: Path, **kw: Any) -> FineTuneParams:
    return micro_chat_params(dataset_dir, tmp_path, **{"suffix": "t", **kw})


async def _artifacts_and_logs(flow_run_id: UUID) -> tuple[list[Any], list[Any], Any]:
    async with get_client() as client:
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
        run = await client.read_flow_run(flow_run_id)
    return arts, logs, run


def test_flow_succeeds_then_rerun_reuses_everything(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path
) -> None:
    params = _params(dataset_dir, tmp_path)
    with use_connection(fake.connection()):
        state = fine_tune(**params.flow_arguments(), return_state=True)
        result = state.result()
        assert result.status == "succeeded" and result.smoke_passed is True
        # The answers the model gave travel in the result (the CLI prints the first one).
        assert [a["prompt"] for a in result.smoke_answers] == ["What colour is item number 3?"]
        assert "item" in result.smoke_answers[0]["output"].lower()
        assert result.fine_tuned_model and result.trained_tokens == 1234
        assert set(result.final_metrics) >= {"train_loss", "valid_loss"}
        assert (tmp_path / "out" / "checkpoints.parquet").is_file() and (
            tmp_path / "out" / "result.json"
        ).is_file()
        assert fake.count("POST", "/files") == 2 and fake.count("POST", "/fine_tuning/jobs") == 1
        # result.json is the same record the flow returned: self-describing, absolute paths.
        record = RunRecord.model_validate_json((tmp_path / "out" / "result.json").read_text())
        assert record == result
        assert record.base_model == "local:micro-chat" and record.seed == 42 and record.suffix == "t"
        assert record.training.path == (dataset_dir / "train.jsonl").absolute()
        assert record.training.sha256 == sha256_file(dataset_dir / "train.jsonl")
        assert record.training.examples > 0 and record.validation is not None
        assert record.output_dir.is_absolute() and record.outputs["metrics_parquet"].is_file()
        assert record.flow_run_id == str(state.state_details.flow_run_id) and record.flow_run_name
        assert record.started_at <= record.finished_at
        assert record.total_steps == fake.total_steps
        assert record.metric_definitions["train_loss"].step == 2  # the fake's last metrics event

        again = fine_tune(**params.flow_arguments())
    assert fake.count("POST", "/files") == 2 and fake.count("POST", "/fine_tuning/jobs") == 1
    assert again.job_id == result.job_id and again.job_attached and again.uploads_reused

    APILogHandler().flush()  # run logs go to the API in batches: push them before reading them back
    arts, logs, run = asyncio.run(_artifacts_and_logs(state.state_details.flow_run_id))
    keys = {a.key for a in arts}
    assert {"dataset-validation", "upload-training", "job", "job-link", "job-progress", "checkpoints"} <= keys
    assert {"loss-curve", "eval-summary", "eval-side-by-side", "fine-tune-result"} <= keys
    progress = [a for a in arts if a.type == "progress"]
    assert progress and progress[0].data == 100.0
    loss = next(a for a in arts if a.key == "loss-curve")
    assert "data:image/png;base64," in loss.data
    # The key never reaches Prefect: not in parameters, artifacts or logs.
    assert SECRET not in json.dumps(run.parameters, default=str)
    assert all(SECRET not in str(a.data) for a in arts)
    assert logs and all(SECRET not in log.message for log in logs)
    assert any("created job" in log.message for log in logs)


def test_bad_dataset_fails_before_upload(fake: FakeMKA1, tmp_path: Path) -> None:
    bad = write_jsonl(
        tmp_path / "bad" / "train.jsonl", [{"messages": [{"role": "user", "content": "x"}]}] * 10
    )
    with use_connection(fake.connection()), pytest.raises(DatasetInvalid) as info:
        fine_tune(**_params(bad.parent, tmp_path).flow_arguments())
    assert f"{bad}:1: messages:" in str(info.value)
    assert fake.calls == []


def test_keyboard_interrupt_cancels_remote_job(fake: FakeMKA1, dataset_dir: Path, tmp_path: Path) -> None:
    fake.timeline = ["running"] * 50
    fake.inject("GET", r"/fine_tuning/jobs/ftjob-[^/]+", exc=KeyboardInterrupt(), status=0)
    with use_connection(fake.connection()):
        state = fine_tune(**_params(dataset_dir, tmp_path).flow_arguments(), return_state=True)
    (job,) = fake.jobs.values()
    assert job["status"] == "cancelled"
    # Prefect records the interrupted run as Cancelled (not Crashed), naming the job it cancelled.
    assert state.is_cancelled() and state.message == f"interrupted: cancelled job {job['id']}"
    with pytest.raises(CancelledRun, match=f"^interrupted: cancelled job {job['id']}$"):
        state.result()
    assert fake.count("POST", f"/fine_tuning/jobs/{job['id']}/cancel") == 1
    recorded = json.loads((tmp_path / "state" / JOBS_FILE).read_text())
    assert [e["status"] for e in recorded.values()] == ["cancelled"]
    # The interrupted task run ends Cancelled too, not Crashed; the tasks before it Completed.
    states = _task_run_states(state.state_details.flow_run_id)
    assert states["wait-for-job"] == ("CANCELLED", "interrupted while waiting for the job")
    assert states["create-job"][0] == "COMPLETED"


def _task_run_states(flow_run_id: UUID | None) -> dict[str, tuple[str, str | None]]:
    """Each task run of the flow run by task name (the run name less its suffix): state type and message."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {
        run.name.rsplit("-", 1)[0]: (run.state.type.value, run.state.message) for run in runs if run.state
    }


@pytest.mark.parametrize("where", ["in create-job, after the POST", "between create-job and the wait"])
def test_keyboard_interrupt_just_after_the_job_was_created_cancels_it(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    if where.startswith("in create-job"):
        monkeypatch.setattr("tasks.create_job.keep_oldest", interrupt)
    else:
        monkeypatch.setattr("flows.experiment.ExperimentRun.job_created", interrupt)
    fake.timeline = ["running"] * 50
    with use_connection(fake.connection()):
        state = fine_tune(**_params(dataset_dir, tmp_path).flow_arguments(), return_state=True)
    (job,) = fake.jobs.values()
    assert job["status"] == "cancelled"
    assert state.is_cancelled() and state.message == f"interrupted: cancelled job {job['id']}"
    recorded = json.loads((tmp_path / "state" / JOBS_FILE).read_text())
    assert [(e["job_id"], e["status"]) for e in recorded.values()] == [(job["id"], "cancelled")]


def test_keyboard_interrupt_before_the_job_ends_cancelled(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path
) -> None:
    fake.inject("POST", "/files", exc=KeyboardInterrupt(), status=0)
    with use_connection(fake.connection()):
        state = fine_tune(**_params(dataset_dir, tmp_path).flow_arguments(), return_state=True)
    assert state.is_cancelled() and state.message == "interrupted before a fine-tuning job was created"
    assert fake.jobs == {}


def test_on_cancellation_hook_cancels_jobs_of_that_flow_run(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path
) -> None:
    params = _params(dataset_dir, tmp_path)
    mine = fake.add_job("running", {})
    other = fake.add_job("running", {})
    with fake.client() as c:
        record_job(params.state_dir, SERVER_ID, None, "k1", c.jobs.retrieve(mine), "flow-run-1")
        record_job(params.state_dir, SERVER_ID, None, "k2", c.jobs.retrieve(other), "flow-run-2")
    flow_run = SimpleNamespace(id="flow-run-1", parameters=params.flow_arguments(json=True))
    with use_connection(fake.connection()):
        on_cancellation_hook(fine_tune, flow_run, None)
    assert fake.jobs[mine]["status"] == "cancelled" and fake.jobs[other]["status"] == "running"


def test_prefect_retries_only_transient_errors(fake: FakeMKA1, dataset_dir: Path, tmp_path: Path) -> None:
    @flow
    def upload_once(name: str) -> str:
        with fake.client() as c:
            return upload_file_task(
                c, dataset_dir / name, state_dir=tmp_path / "s", server_id=SERVER_ID
            ).file_id

    fake.inject("POST", "/files", 503)
    assert upload_once("train.jsonl").startswith("file-")
    assert fake.count("POST", "/files") == 2  # failed once, retried by Prefect
    fake.inject("POST", "/files", 400)
    with pytest.raises(BadRequestError):
        upload_once("validation.jsonl")
    assert fake.count("POST", "/files") == 3  # a 400 is not retried


def test_cli_run_prints_summary(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "run",
        str(dataset_dir),
        "--model",
        "local:micro-chat",
        "--epochs",
        "2",
        "--poll-interval",
        "0.01",
        "--state-dir",
        str(tmp_path / "state"),
        "--output",
        str(tmp_path / "out"),
    ]
    with use_connection(fake.connection()):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "succeeded" in out and "fine-tuned model" in out and "train_loss" in out
    (job,) = fake.jobs.values()
    assert job["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
    fake.timeline = ["running", "failed"]
    with use_connection(fake.connection()):
        assert main([*argv, "--seed", "9"]) == 1
    assert "failed" in capsys.readouterr().out
