"""End to end: the fine-tune flow under the Prefect harness against the real embedded backend.

One backend (temp data dir) serves the module; each test scopes itself with its own end user
(X-On-Behalf-Of), so file and job lists are per test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.settings import get_current_settings
from prefect.variables import Variable

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from client import ClientSettings, MKA1Client
from evaluation.champion import PrefectVariables
from evaluation.outcome import EvaluationReport
from flows.fine_tune import _judge_plan, fine_tune
from flows.judging import judge_run
from flows.params import FineTuneParams
from tasks.errors import DatasetInvalid, GateFailed
from tasks.metrics import METRIC_COLUMNS
from tests.backend_workers import frozen_when
from tests.pipeline.conftest import write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "customer-support"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """A real backend; the flow finds it through FTPIPE_BACKEND_* (the embedded-reuse path)."""
    data_dir = tmp_path_factory.mktemp("backend-data")
    with start_backend(BackendSettings(data_dir=data_dir, port=0)) as rb, pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTPIPE_BACKEND_DATA_DIR", str(data_dir))
        mp.setenv("FTPIPE_BACKEND_PORT", str(rb.port))
        yield rb


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40/10 slice of the sample dataset plus its smoke prompts."""
    d = tmp_path_factory.mktemp("ds")
    for name, n in (("train.jsonl", 40), ("validation.jsonl", 10)):
        lines = (SAMPLE / name).read_text(encoding="utf-8").splitlines()[:n]
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (d / "smoke.jsonl").write_text((SAMPLE / "smoke.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    return d


def _params(dataset: Path, tmp_path: Path, user: str, epochs: int = 2, **kw: Any) -> FineTuneParams:
    return FineTuneParams(
        dataset_dir=dataset,
        model="local:micro-chat",
        seed=3,
        n_epochs=epochs,
        output_dir=tmp_path / "out",
        state_dir=tmp_path / "state",
        poll_interval_s=0.2,
        poll_max_interval_s=1.0,
        wait_timeout_s=300,
        on_behalf_of=user,
        **kw,
    )


def _client(rb: RunningBackend, user: str) -> MKA1Client:
    return MKA1Client(ClientSettings(base_url=rb.base_url, api_key=rb.api_key, on_behalf_of=user))


def _lists(rb: RunningBackend, user: str) -> tuple[list[str], list[Any]]:
    with _client(rb, user) as c:
        return [f.id for f in c.files.list()], list(c.jobs.list())


async def _artifact_keys(flow_run_id: Any) -> set[str]:
    async with get_client() as client:
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key for a in arts if a.key}


async def _task_runs(flow_run_id: Any) -> dict[str, Any]:
    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {r.name: r for r in runs}


def _scores(report: EvaluationReport) -> list[tuple[Any, ...]]:
    return [
        (
            m.role,
            m.step,
            m.answers,
            m.errors,
            m.score,
            m.token_f1,
            m.rouge_l,
            m.checks_pass_rate,
            m.smoke_passed,
        )
        for m in report.models
    ]


def test_flow_trains_and_rerun_creates_nothing(
    backend: RunningBackend, small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTPIPE_EVAL_DURING_TRAINING", "all")  # every model judged as soon as it serves
    params = _params(small_dataset, tmp_path, "e2e-happy")
    state = fine_tune(**params.flow_arguments(), return_state=True)
    result = state.result()
    assert result.status == "succeeded" and result.fine_tuned_model and result.trained_tokens
    assert result.smoke_passed is True
    assert result.smoke_answers and all(a["output"].strip() for a in result.smoke_answers)
    ck = pd.read_parquet(tmp_path / "out" / "checkpoints.parquet")
    assert len(ck) >= 1
    for name in METRIC_COLUMNS:
        assert ck[name].dtype == "float64" and ck[name].notna().any(), name
    steps = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert steps["train_loss"].notna().all() and steps["step"].is_monotonic_increasing
    assert steps["step"].iloc[-1] == steps["total_steps"].iloc[-1] == result.total_steps  # reaches the end
    ev = pd.read_parquet(tmp_path / "out" / "events.parquet")
    assert ev["message"].str.contains("Training completed").any() and "metrics" not in set(ev["type"])
    assert (tmp_path / "out" / "loss_curve.png").read_bytes().startswith(b"\x89PNG")
    keys = asyncio.run(_artifact_keys(state.state_details.flow_run_id))
    assert {"dataset-validation", "job", "job-progress", "checkpoints", "loss-curve", "eval-summary"} <= keys
    # The eval stage asked the base model, every checkpoint model and the fine-tuned model over real HTTP.
    evaluation = result.evaluation
    assert evaluation is not None and evaluation.eval_set is not None and evaluation.eval_set.size == 10
    roles = [m.role for m in evaluation.models]
    # The checkpoint at the last step is the fine-tuned model itself: asked once, as the fine-tuned model.
    at_end = int((ck["step"] == result.total_steps).sum())
    assert roles[0] == "base" and roles[-1] == "fine-tuned" and roles.count("checkpoint") == len(ck) - at_end
    assert all(m.errors == 0 and m.score is not None and 0 <= m.score <= 1 for m in evaluation.models)
    frame = pd.read_parquet(tmp_path / "out" / "eval.parquet")
    assert len(frame) == len(evaluation.models) * (10 + 5) and frame["latency_s"].gt(0).all()
    assert evaluation.selected is not None and evaluation.selected.model in set(frame["model"])
    # The base model was judged while the job trained (its task run started before the wait ended) ...
    runs = asyncio.run(_task_runs(state.state_details.flow_run_id))
    wait = next(r for name, r in runs.items() if name.startswith("wait-for-job"))
    assert runs["evaluate local:micro-chat"].start_time < wait.end_time
    assert not [name for name, r in runs.items() if r.state is None or not r.state.is_completed()]
    # ... and the same job judged afresh after training, every model asked (the fine-tuned model itself, not
    # its last-step checkpoint), with no answer cache, scores the same.
    with _client(backend, "e2e-happy") as c:
        job = c.jobs.retrieve(result.job_id)
    sequential = judge_run(
        plan=_judge_plan(params),
        settings=ClientSettings(base_url=backend.base_url, api_key=backend.api_key, on_behalf_of="e2e-happy"),
        transport=None,
        base_model=str(job.model),
        job=job,
        checkpoints_parquet=tmp_path / "out" / "checkpoints.parquet",
        final_metrics=result.final_metrics,
        output_dir=tmp_path / "sequential",
        flow_run_id=None,
        store=PrefectVariables(),
        state_dir=tmp_path / "sequential-state",
        final_step=result.total_steps,
    )
    assert sequential.report.calls == len(evaluation.models) * 15 and sequential.report.cached_answers == 0
    assert _scores(sequential.report) == _scores(evaluation)

    files, jobs = _lists(backend, "e2e-happy")
    # Same job inputs, so this re-attaches; it evaluates again and promotes.
    promoting = params.model_copy(update={"promote_as": "e2e-bot", "gate_min_improvement": None})
    again = fine_tune(**promoting.flow_arguments())
    assert _lists(backend, "e2e-happy")[0] == files
    assert [j.id for j in _lists(backend, "e2e-happy")[1]] == [j.id for j in jobs] == [result.job_id]
    assert again.job_id == result.job_id and again.job_attached and again.uploads_reused
    assert again.promoted_as == "e2e-bot" and again.evaluation is not None
    # Every answer of the re-run came from the answer cache (built-in base, checkpoints, fine-tuned model).
    assert again.evaluation.calls == 0 and again.evaluation.cached_answers == len(evaluation.models) * 15
    assert _scores(again.evaluation) == _scores(evaluation)
    champion = Variable.get("ftpipe-champion-e2e-bot")
    assert again.evaluation.selected is not None
    assert champion["model_id"] == again.evaluation.selected.model and champion["job_id"] == result.job_id

    with pytest.raises(GateFailed, match=r"^gate failed: min_score: .* below the threshold 0\.9900$"):
        fine_tune(
            **params.model_copy(update={"promote_as": "e2e-bot", "gate_min_score": 0.99}).flow_arguments()
        )
    assert Variable.get("ftpipe-champion-e2e-bot") == champion


def test_bad_dataset_uploads_nothing(backend: RunningBackend, tmp_path: Path) -> None:
    bad = write_jsonl(
        tmp_path / "bad" / "train.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}] * 12
    )
    with pytest.raises(DatasetInvalid) as info:
        fine_tune(**_params(bad.parent, tmp_path, "e2e-bad").flow_arguments())
    assert f"{bad}:1: messages:" in str(info.value)
    assert _lists(backend, "e2e-bad") == ([], [])


def _spawn(params: FineTuneParams, tmp_path: Path) -> subprocess.Popen[bytes]:
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params.flow_arguments(json=True)))
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pipeline._flow_child", str(path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "child.log", "wb"),  # noqa: SIM115 - closed with the process
    )


def _running_job(rb: RunningBackend, user: str, child: subprocess.Popen[bytes], tmp_path: Path) -> str | None:
    """The user's newest job id once it is running; the flow child must still be alive until then."""
    jobs = _lists(rb, user)[1]
    if jobs and jobs[0].status == "running":
        return str(jobs[0].id)
    assert child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
    return None


def _wait_running(rb: RunningBackend, user: str, child: subprocess.Popen[bytes], tmp_path: Path) -> str:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job_id = _running_job(rb, user, child, tmp_path)
        if job_id:
            return job_id
        time.sleep(0.2)
    raise AssertionError("job never reached running")


def test_killed_run_reattaches_to_same_job(
    backend: RunningBackend, small_dataset: Path, tmp_path: Path
) -> None:
    params = _params(small_dataset, tmp_path, "e2e-kill", epochs=8)
    child = _spawn(params, tmp_path)
    try:
        job_id = _wait_running(backend, "e2e-kill", child, tmp_path)
    finally:
        child.kill()  # SIGKILL: no hooks, no cleanup, like a crashed worker
        child.wait(30)
    state_jobs = json.loads((tmp_path / "state" / "jobs.json").read_text())
    assert [e["job_id"] for e in state_jobs.values()] == [job_id]
    result = fine_tune(**params.flow_arguments())
    assert result.job_id == job_id and result.job_attached and result.status == "succeeded"
    assert [j.id for j in _lists(backend, "e2e-kill")[1]] == [job_id]


def test_interrupt_cancels_remote_job(backend: RunningBackend, small_dataset: Path, tmp_path: Path) -> None:
    params = _params(small_dataset, tmp_path, "e2e-cancel", epochs=30)
    child = _spawn(params, tmp_path)
    try:
        # The worker is held still until the flow has cancelled, so the job cannot succeed first.
        with frozen_when(backend, lambda: _running_job(backend, "e2e-cancel", child, tmp_path)) as job_id:
            child.send_signal(signal.SIGINT)  # Ctrl-C -> KeyboardInterrupt in the wait loop
            assert child.wait(60) != 0
    finally:
        if child.poll() is None:
            child.kill()
    with _client(backend, "e2e-cancel") as c:
        deadline = time.monotonic() + 30
        while (status := c.jobs.retrieve(job_id).status) != "cancelled" and time.monotonic() < deadline:
            time.sleep(0.2)
    assert status == "cancelled", (tmp_path / "child.log").read_text()[-3000:]
