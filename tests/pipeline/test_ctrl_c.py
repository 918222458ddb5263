"""A terminal Ctrl-C on ``ftpipe run`` (issue 15 item 7, issue 16 item 3): SIGINT to the whole process group.

The command runs in its own session, as a terminal's foreground job, against a real embedded backend and a
Prefect API that both outlive it, so the test can read what they recorded afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import get_current_settings

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from client import ClientSettings, MKA1Client
from tasks.state import JOBS_FILE
from tests.backend_workers import frozen_when

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "customer-support"
USER = "ctrl-c"
EXIT_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    with start_backend(BackendSettings(data_dir=tmp_path_factory.mktemp("ctrl-c-data"), port=0)) as rb:
        yield rb


def _dataset(d: Path) -> Path:
    d.mkdir()
    for name, n in (("train.jsonl", 40), ("validation.jsonl", 10)):
        lines = (SAMPLE / name).read_text(encoding="utf-8").splitlines()[:n]
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def _env(rb: RunningBackend, tmp_path: Path) -> dict[str, str]:
    drop = ("MKA1_", "FTPIPE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        PREFECT_API_URL=str(get_current_settings().api.url),
        FTPIPE_BACKEND_DATA_DIR=str(rb.data_dir),  # the running backend is reused (its key is in that dir)
        FTPIPE_BACKEND_PORT=str(rb.port),
        FTPIPE_STATE_DIR=str(tmp_path / "state"),
        FTPIPE_TRACKING_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    return env


def _running_job(rb: RunningBackend, proc: subprocess.Popen[bytes], out: Path) -> str | None:
    settings = ClientSettings(base_url=rb.base_url, api_key=rb.api_key, on_behalf_of=USER)
    with MKA1Client(settings) as c:
        jobs = list(c.jobs.list())
    if jobs and jobs[0].status == "running":
        return str(jobs[0].id)
    assert proc.poll() is None, out.read_text(errors="replace")[-3000:]
    return None


def test_ctrl_c_cancels_the_job_exits_130_and_prefect_records_cancelled(
    backend: RunningBackend, tmp_path: Path
) -> None:
    dataset = _dataset(tmp_path / "ds")
    out = tmp_path / "terminal.txt"
    argv = [sys.executable, "-m", "cli", "run", str(dataset), "--model", "local:micro-chat", "--epochs", "30"]
    argv += ["--no-eval", "--poll-interval", "0.3", "--progress", "plain", "--on-behalf-of", USER]
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            argv,
            cwd=tmp_path,
            env={**_env(backend, tmp_path), "PYTHONPATH": str(REPO)},
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the one a terminal's Ctrl-C signals
        )
    try:
        # Generous for the start (Prefect, validation, upload on a loaded machine); the training worker is held
        # still from then on, so the job cannot finish before the interrupt lands.
        with frozen_when(backend, lambda: _running_job(backend, proc, out), timeout=300) as job_id:
            shown = len(out.read_text(errors="replace").splitlines())
            started = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)
            try:
                code = proc.wait(EXIT_WITHIN_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running {EXIT_WITHIN_S}s after Ctrl-C:\n{out.read_text()[-3000:]}")
            took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    text = out.read_text(errors="replace")
    after = [line for line in text.splitlines()[shown:] if line.strip()]
    assert code == 130, text[-3000:]
    assert took < EXIT_WITHIN_S
    assert "Traceback" not in text, text[-3000:]
    assert after == [f"interrupted: cancelled job {job_id} (Prefect run marked Cancelled)"], after

    settings = ClientSettings(base_url=backend.base_url, api_key=backend.api_key, on_behalf_of=USER)
    with MKA1Client(settings) as c:
        assert c.jobs.retrieve(job_id).status == "cancelled"
        assert [j.id for j in c.jobs.list()] == [job_id]

    (entry,) = json.loads((tmp_path / "state" / JOBS_FILE).read_text()).values()
    assert entry["job_id"] == job_id and entry["status"] == "cancelled"
    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(entry["flow_run_id"])
    assert run.state is not None and run.state.is_cancelled(), run.state
    assert run.state.message == f"interrupted: cancelled job {job_id}"
