"""Four identical whole ``fine_tune`` runs started together under 20% faults (issue 16): one file per dataset
file, one job, every run succeeds and follows that job, and every run's checkpoint frame is the server's.

Two of the launches share a state dir (one machine: the per-key lock decides), the other two have their own
(other machines: the server's Idempotency-Key decides). The task-body barrier test, ten rounds, is
``test_concurrent_launches.py``; ``bench/fault_campaign.py`` runs this at 35% faults.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest

from backend.launcher import RunningBackend
from flows.fine_tune import fine_tune
from tasks.record import RunRecord
from tests.reliability.reliability_kit import flow_params, server_view, small_dataset

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness", "remote_env")]

LAUNCHES = 4


def test_four_identical_runs_started_together_make_one_file_each_and_one_job(
    faulty_backend: RunningBackend, tmp_path: Path
) -> None:
    user = "concurrent-flows"
    data = small_dataset(tmp_path / "ds")
    works = [tmp_path / f"launch{i}" for i in range(LAUNCHES)]
    runs = [
        flow_params(data, work, faulty_backend, user).model_copy(
            update={"state_dir": tmp_path / "shared-state" if i < 2 else work / "state"}
        )
        for i, work in enumerate(works)
    ]
    gate = threading.Barrier(LAUNCHES)
    results: list[RunRecord] = []
    errors: list[BaseException] = []

    def launch(i: int) -> None:
        try:
            gate.wait(timeout=60)
            results.append(fine_tune(**runs[i].flow_arguments()))
        except BaseException as exc:  # reported below with every launch's outcome
            errors.append(exc)

    threads = [threading.Thread(target=launch, args=(i,)) for i in range(LAUNCHES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [r.status for r in results] == ["succeeded"] * LAUNCHES

    view = server_view(faulty_backend, user)
    assert len(view.training_files) == 2, [f.filename for f in view.training_files]  # train + validation
    assert [j.id for j in view.jobs] == [results[0].job_id]
    assert {r.job_id for r in results} == {results[0].job_id}
    assert view.checkpoints is not None and len(view.checkpoints) >= 2
    for work in works:
        written = pd.read_parquet(work / "out" / "checkpoints.parquet")
        pd.testing.assert_frame_equal(written, view.checkpoints.reset_index(drop=True), check_dtype=False)
