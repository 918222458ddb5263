"""Interrupted training: Ctrl-C on ``ftpipe backend serve`` pauses jobs gracefully, and a killed training worker
(kill -9, as the OOM killer does) resumes its job once from the latest checkpoint, then fails it with the reason.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from backend_testkit import TERMINAL, Api, wait_for
from pydantic import SecretStr

from backend.launcher import RunningBackend, free_port, start_backend
from backend.layout import Layout
from backend.pool import WORKER_DIED
from backend.settings import BackendSettings
from contract.wire import API_PREFIX
from tests.backend_workers import frozen_when, training_workers

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
KEY = "sk-ftpipe-test-interrupts-0001"


@dataclass
class Served:
    """``ftpipe backend serve`` started by the test in its own session, as a terminal runs it."""

    proc: subprocess.Popen[bytes]
    data_dir: Path
    base_url: str
    api_key: SecretStr
    output: Path

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc.poll() is None else None

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")


def _serve(data_dir: Path, output: Path) -> Served:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTPIPE_BACKEND_")}
    env.update(FTPIPE_BACKEND_API_KEY=KEY, FTPIPE_BACKEND_METRICS_EVERY_N_STEPS="2", PYTHONUNBUFFERED="1")
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "backend",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, which a terminal's Ctrl-C signals as a whole
        )
    served = Served(proc, data_dir, f"http://127.0.0.1:{port}{API_PREFIX}", SecretStr(KEY), output)

    def healthy() -> bool:
        assert proc.poll() is None, served.text()[-3000:]
        try:
            return httpx.get(served.base_url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=180, interval=0.3)
    return served


def _messages(api: Api, job_id: str) -> list[str]:
    return [e["message"] for e in api.events(job_id)]


def _checkpointed(api: Api, job_id: str) -> bool:
    return any(m.startswith("Checkpoint saved") for m in _messages(api, job_id))


def test_ctrl_c_on_serve_pauses_the_job_and_a_restart_resumes_it(tmp_path: Path, train_file: Path) -> None:
    data_dir = tmp_path / "data"
    served = _serve(data_dir, tmp_path / "serve.out")
    api = Api(served)  # type: ignore[arg-type]  # duck-typed: base_url and api_key
    try:
        job = api.create_job(api.upload(train_file)["id"], n_epochs=4, batch_size=1)
        # The worker is held still from its first checkpoint until the server has asked it to stop, so the job
        # cannot finish first; the SIGINT reaches it too (pending while it is stopped), as in a terminal.
        with frozen_when(served, lambda: _checkpointed(api, job["id"])):
            os.killpg(served.proc.pid, signal.SIGINT)
            wait_for(lambda: "worker(s) to stop" in served.text(), timeout=60)
        code = served.proc.wait(60)
    finally:
        if served.proc.poll() is None:
            os.killpg(served.proc.pid, signal.SIGKILL)
            served.proc.wait(10)
    output = served.text()
    assert code == 130, output[-3000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    # The server's last word (multiprocessing's resource tracker may still warn after it, from its own process).
    assert "ftpipe backend stopped (interrupted): running jobs were checkpointed and re-queued\n" in output
    with sqlite3.connect(Layout(data_dir).db_path) as db:
        status, resume = db.execute("SELECT status, resume FROM jobs WHERE id=?", (job["id"],)).fetchone()
    assert (status, resume) == ("queued", 1)

    with start_backend(BackendSettings(data_dir=data_dir, api_key=SecretStr(KEY)), port=0) as rb:
        api = Api(rb)
        done = api.wait_status(job["id"], TERMINAL, timeout=300)
        assert done["status"] == "succeeded", done["error"]
        messages = _messages(api, job["id"])
    assert "Backend shutting down: checkpoint saved, job re-queued to resume" in messages
    resumed = [m for m in messages if m.startswith("Resumed from step")]
    assert resumed and int(resumed[0].split()[-1]) >= 2, messages  # from a checkpoint, not from the start
    assert not any(m.startswith(WORKER_DIED) for m in messages)


@pytest.fixture(scope="module")
def crash_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    settings = BackendSettings(data_dir=tmp_path_factory.mktemp("worker-kill-data"), metrics_every_n_steps=2)
    with start_backend(settings, port=0) as rb:
        yield rb


def _kill_worker_when(rb: RunningBackend, condition: Callable[[], bool]) -> int:
    """SIGKILL the training worker (as the OOM killer would) once ``condition()`` holds, then wait until the
    pool has replaced it; returns the killed pid."""
    with frozen_when(rb, condition):
        (worker,) = training_workers(rb)
        worker.kill()
    wait_for(lambda: [p.pid for p in training_workers(rb)] not in ([], [worker.pid]), timeout=60)
    return worker.pid


def _resumed_after_death(api: Api, job_id: str) -> bool:
    """The job runs again, resumed from a checkpoint after its worker died."""
    messages = _messages(api, job_id)
    died = [i for i, m in enumerate(messages) if m.startswith(WORKER_DIED)]
    return bool(died) and any(m.startswith("Resumed from step") for m in messages[died[0] :])


def test_killed_worker_resumes_the_job_once_from_its_checkpoint(
    crash_backend: RunningBackend, train_file: Path
) -> None:
    api = Api(crash_backend, owner="kill-once")
    job = api.create_job(api.upload(train_file)["id"], n_epochs=4, batch_size=1)
    _kill_worker_when(crash_backend, lambda: _checkpointed(api, job["id"]))
    done = api.wait_status(job["id"], TERMINAL, timeout=300)
    assert done["status"] == "succeeded", done["error"]
    events = api.events(job["id"])
    died = [e for e in events if e["message"].startswith(WORKER_DIED)]
    assert len(died) == 1 and died[0]["level"] == "warn", died
    assert "killed by SIGKILL" in died[0]["message"] and "its last checkpoint (step" in died[0]["message"]
    step = int(died[0]["message"].split("(step ")[1].split(")")[0])
    after = [e["message"] for e in events[events.index(died[0]) :]]
    assert f"Resumed from step {step}" in after, after[:5]  # from the checkpoint the event named
    checkpoints = {c["step_number"] for c in _checkpoints(api, job["id"])}
    assert step in checkpoints and max(checkpoints) == 64  # 16 examples x 4 epochs, batch 1


def test_worker_killed_twice_fails_the_job_with_the_reason(
    crash_backend: RunningBackend, train_file: Path
) -> None:
    api = Api(crash_backend, owner="kill-twice")
    job = api.create_job(api.upload(train_file)["id"], n_epochs=4, batch_size=1)
    _kill_worker_when(crash_backend, lambda: _checkpointed(api, job["id"]))
    _kill_worker_when(crash_backend, lambda: _resumed_after_death(api, job["id"]))
    done = api.wait_status(job["id"], TERMINAL, timeout=120)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "worker_crashed"
    assert done["error"]["message"].startswith(f"{WORKER_DIED} again (killed by SIGKILL")
    assert "after 1 automatic resume" in done["error"]["message"]
    messages = _messages(api, job["id"])
    assert sum(m.startswith(WORKER_DIED) for m in messages) == 1
    assert messages[-1] == f"Fine-tuning job failed: {done['error']['message']}"
    # The replacement worker still trains: the pool keeps its size after both deaths.
    assert len(training_workers(crash_backend)) == 1


def _checkpoints(api: Api, job_id: str) -> list[dict[str, Any]]:
    with api.client() as c:
        r = c.get(f"/fine_tuning/jobs/{job_id}/checkpoints", params={"limit": 100})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])
