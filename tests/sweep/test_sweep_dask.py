"""The Dask task runner path: a 2-config sweep on a LocalCluster of worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.launcher import RunningBackend
from flows.sweep import sweep
from flows.sweep_config import SweepParams
from tests.sweep.conftest import base_params

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(600)]


def test_two_config_sweep_on_a_dask_local_cluster(
    backend: RunningBackend, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FTPIPE_DASK_ADDRESS", raising=False)
    params = SweepParams.model_validate(
        {
            "base": base_params(tiny_dataset, tmp_path),
            "configs": [{"name": "d1", "seed": 21}, {"name": "d2", "seed": 22, "batch_size": 2}],
            "task_runner": "dask",
            "max_concurrency": 2,
            "output_dir": str(tmp_path / "sweep"),
        }
    )
    state = sweep(**params.flow_arguments(), return_state=True)
    assert state.is_completed(), state.message
    frame = state.result().frame().set_index("name")
    assert list(frame.index) == ["d1", "d2"]
    assert (frame["status"] == "succeeded").all(), frame["error"].tolist()
    assert frame["job_id"].nunique() == 2 and frame["flow_run_id"].notna().all()
    assert frame.loc["d2", "batch_size"] == 2  # a number in the frame, not "2"
