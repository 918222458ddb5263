"""Backend crash mid-training while a flow polls: the job resumes and the flow rides out the outage.

(Killing the *flow* process with SIGKILL and re-attaching is covered by
tests/pipeline/test_e2e_backend.py::test_killed_run_reattaches_to_same_job.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.settings import get_current_settings

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from tests.backend_workers import frozen_when
from tests.reliability.reliability_kit import REPO, client_for, flow_params, small_dataset

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
USER = "crash-user"
OUTAGE_S = 3.0


def test_backend_killed_mid_training_job_resumes_and_flow_finishes(tmp_path: Path) -> None:
    data = small_dataset(tmp_path / "ds", n_train=40)
    with start_backend(BackendSettings(data_dir=tmp_path / "backend", metrics_every_n_steps=2), port=0) as rb:
        params = flow_params(data, tmp_path, rb, USER, epochs=8)
        (tmp_path / "params.json").write_text(params.model_dump_json())
        env = {
            **os.environ,
            "PREFECT_API_URL": str(get_current_settings().api.url),
            "MKA1_API_KEY": rb.api_key.get_secret_value(),
            "MKA1_TIMEOUT_S": "10",
            # The client would retry a short outage away by itself; without in-place retries the wait
            # loop meets it, which is what this test watches (it must keep polling through it).
            "MKA1_MAX_RETRIES": "0",
        }
        log_path = tmp_path / "child.log"
        with log_path.open("wb") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "tests.pipeline._flow_child", str(tmp_path / "params.json")],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            # The worker is held still until the server is dead, so the job cannot finish before the crash.
            with frozen_when(
                rb,
                lambda: _checkpointed_job(rb, child, log_path),
                explain=lambda: "job never reached a first checkpoint:\n" + log_path.read_text()[-3000:],
            ) as job_id:
                rb.kill()  # SIGKILL: a crash (released, the workers see their parent gone and exit)
            time.sleep(OUTAGE_S)
            rb.start()
            assert child.wait(400) == 0, log_path.read_text()[-4000:]
        finally:
            if child.poll() is None:
                child.kill()
        with client_for(rb, USER) as c:
            jobs = list(c.jobs.list())
            messages = [e.message for e in reversed(c.jobs.list_events(job_id, limit=10000).data)]
    assert [j.id for j in jobs] == [job_id] and jobs[0].status == "succeeded"
    assert "Resumed after backend restart" in messages
    assert any(m.startswith("Resumed from step") for m in messages), messages  # from the checkpoint
    out = log_path.read_text()
    assert "transient error polling" in out and "succeeded" in out, out[-4000:]


def _checkpointed_job(rb: RunningBackend, child: subprocess.Popen[bytes], log_path: Path) -> str | None:
    """The job id once it is running and has at least one checkpoint (so resume has state to use)."""
    assert child.poll() is None, log_path.read_text()[-3000:]
    with client_for(rb, USER) as c:
        jobs = list(c.jobs.list())
        if jobs and jobs[0].status == "running" and next(c.jobs.list_checkpoints(jobs[0].id), None):
            return jobs[0].id
    return None
