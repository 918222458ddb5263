"""A served ``fine-tune`` deployment, triggered with ``run_deployment``, runs to completion on the backend."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.deployments.runner import RunnerDeployment
from prefect.runner import Runner

from backend.launcher import RunningBackend
from client import ClientSettings, MKA1Client
from flows.fine_tune import fine_tune
from tasks.record import RunRecord
from tests.sweep.conftest import base_params

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(600)]


def test_served_deployment_run_completes(backend: RunningBackend, tiny_dataset: Path, tmp_path: Path) -> None:
    runner = Runner(name="sweep-test-runner", query_seconds=1)
    # add_deployment (not add_flow): the run re-imports the entrypoint in `python -m prefect.engine`, as a
    # work-pool worker does. add_flow would cloudpickle the flow object instead, which currently breaks
    # fine_tune's string annotations (`from __future__ import annotations` in flows/fine_tune.py).
    deployment: RunnerDeployment = fine_tune.to_deployment(name="served-test")  # type: ignore[assignment]
    runner.add_deployment(deployment)

    # Schedule first, then let the runner execute what is due once (in a subprocess, like a worker would).
    params = base_params(tiny_dataset, tmp_path, seed=31)
    scheduled: FlowRun = run_deployment(  # type: ignore[assignment]
        "fine-tune/served-test", parameters=params, timeout=0, as_subflow=False
    )
    asyncio.run(runner.start(run_once=True))

    with get_client(sync_client=True) as pc:
        run = pc.read_flow_run(scheduled.id)
    assert run.state is not None and run.state.is_completed(), run.state
    result = RunRecord.model_validate_json((tmp_path / "out" / "result.json").read_text())
    # Named and tagged from its config, as a deployment run too (the parameters' defaults included).
    assert run.name == result.flow_run_name == "micro-chat-s31"
    assert {"model:local:micro-chat", "method:supervised", "deployment:served-test"} <= set(run.tags)
    assert result.status == "succeeded" and result.fine_tuned_model
    settings = ClientSettings(base_url=backend.base_url, api_key=backend.api_key)
    with MKA1Client(settings) as c:
        job = c.jobs.retrieve(result.job_id)
    assert job.status == "succeeded" and (job.metadata or {}).get("ftpipe_flow_run_id") == str(run.id)
