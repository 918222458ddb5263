"""Identical launches started together make one file and one job (issue 16), also under 20% faults.

The two task bodies (upload, create job) of four launches are released together by barriers, ten times.
Half the rounds give each launch its own state dir (four machines: only the server's Idempotency-Key
prevents duplicates), half share one (one machine: the per-key lock makes the others attach).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

from backend.launcher import RunningBackend
from client.errors import ConflictError
from client.models import Method
from tasks.create_job import JobHandle, JobSpec, create_job_task
from tasks.upload import UploadedFile, upload_file_task
from tests.reliability.reliability_kit import (
    client_for,
    server_view,
    set_faults,
    small_dataset,
)

pytestmark = pytest.mark.integration

LAUNCHES = 4
ROUNDS = 10


def _launch(
    rb: RunningBackend,
    user: str,
    train: Path,
    state: Path,
    gates: tuple[threading.Barrier, threading.Barrier],
) -> tuple[UploadedFile, JobHandle]:
    # A repeat waits on the server while the first request with its key works: give it time (the flow
    # would also have its Prefect task retries, which these bare task bodies lack).
    with client_for(rb, user, timeout_s=30.0) as c:
        gates[0].wait()
        uploaded = upload_file_task.fn(c, train, state_dir=state, server_id="barrier")
        spec = JobSpec("local:micro-chat", uploaded.file_id, None, Method(type="supervised"), "barrier", 7)
        gates[1].wait()
        handle = create_job_task.fn(
            c, spec, metadata={}, state_dir=state, server_id="barrier", flow_run_id=None
        )
    return uploaded, handle


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_identical_launches_make_one_file_and_one_job(
    faulty_backend: RunningBackend, tmp_path: Path, round_: int
) -> None:
    user = f"barrier-{round_}"  # a fresh tenant per round: its files and jobs are exactly this round's
    train = small_dataset(tmp_path / "ds") / "train.jsonl"
    same_machine = round_ % 2 == 1
    gates = (threading.Barrier(LAUNCHES), threading.Barrier(LAUNCHES))
    results: list[tuple[UploadedFile, JobHandle]] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        state = tmp_path / ("state" if same_machine else f"state-{i}")
        try:
            results.append(_launch(faulty_backend, user, train, state, gates))
        except BaseException as exc:  # reported below, with every launch's outcome
            errors.append(exc)
            for gate in gates:
                gate.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(LAUNCHES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    view = server_view(faulty_backend, user)
    set_faults(faulty_backend, False)
    try:
        with client_for(faulty_backend, user) as c:
            for job in view.jobs:
                with contextlib.suppress(ConflictError):  # it may have finished already (idle machine)
                    c.jobs.cancel(job.id)  # the worker is shared: free it for the next round
    finally:
        set_faults(faulty_backend, True)
    assert not errors, errors
    assert len(view.training_files) == 1, [f.id for f in view.training_files]
    assert len(view.jobs) == 1, [j.id for j in view.jobs]
    assert {u.file_id for u, _ in results} == {view.training_files[0].id}
    assert {h.job.id for _, h in results} == {view.jobs[0].id}
