"""End-to-end sweeps against the real embedded backend (local:micro-chat, 12 examples, 1 epoch)."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pandas as pd
import pytest
from prefect import get_client
from prefect.client.schemas.objects import StateType

from backend.launcher import RunningBackend
from client import ClientSettings, MKA1Client
from flows.sweep import sweep
from flows.sweep_config import SweepParams
from flows.sweep_report import SweepResult
from tests.sweep.conftest import base_params

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(600)]


def _run(params: SweepParams) -> tuple[SweepResult, str]:
    state = sweep(**params.flow_arguments(), return_state=True)
    assert state.is_completed(), state.message
    return state.result(), str(state.state_details.flow_run_id)


def _child_runs(sweep_run_id: str, flow_run_ids: list[str]) -> list[str]:
    """Names of the completed flow runs in ``flow_run_ids`` whose parent task ran in the sweep's flow run."""
    names = []
    with get_client(sync_client=True) as pc:
        for run_id in flow_run_ids:
            run = pc.read_flow_run(UUID(run_id))
            assert run.parent_task_run_id is not None, f"{run.name} is not nested under the sweep"
            parent = pc.read_task_run(run.parent_task_run_id)
            if str(parent.flow_run_id) == sweep_run_id and run.state_type == StateType.COMPLETED:
                names.append(run.name)
    return sorted(names)


def test_three_config_sweep_compares_and_picks_the_best(
    backend: RunningBackend, tiny_dataset: Path, tmp_path: Path
) -> None:
    params = SweepParams.model_validate(
        {
            "base": base_params(tiny_dataset, tmp_path),
            "grid": {"learning_rate_multiplier": [0.5, 1.0, 2.0]},
            "max_concurrency": 2,
            "output_dir": str(tmp_path / "sweep"),
            "name": "lr-grid",
        }
    )
    result, run_id = _run(params)

    frame = result.frame()
    assert len(frame) == 3 and result.n_succeeded == 3 and result.n_failed == 0
    assert set(frame["status"]) == {"succeeded"}
    assert frame["full_valid_loss"].notna().all() and (frame["trained_tokens"] > 0).all()
    assert frame["job_id"].nunique() == 3 and frame["fine_tuned_model"].notna().all()
    best = min(result.rows, key=lambda r: r["full_valid_loss"])
    assert result.best is not None and result.best["name"] == best["name"]
    for name in ("csv", "parquet", "plot", "json"):
        assert result.outputs[name].is_file()
    assert len(pd.read_parquet(result.outputs["parquet"])) == 3
    assert result.outputs["plot"].read_bytes()[:4] == b"\x89PNG"

    # Each config ran as its own fine-tune flow run, and the backend agrees each job succeeded.
    assert _child_runs(run_id, list(frame["flow_run_id"])) == sorted(f"sweep-{n}" for n in frame["name"])
    settings = ClientSettings(base_url=backend.base_url, api_key=backend.api_key)
    with MKA1Client(settings) as c:
        assert {c.jobs.retrieve(j).status for j in frame["job_id"]} == {"succeeded"}


def test_a_bad_config_is_reported_and_does_not_sink_the_others(
    backend: RunningBackend, tiny_dataset: Path, tmp_path: Path
) -> None:
    params = SweepParams.model_validate(
        {
            "base": base_params(tiny_dataset, tmp_path),
            "configs": [
                {"name": "good-a", "seed": 11},
                {"name": "no-such-model", "model": "local:no-such-model", "seed": 12},
                {"name": "good-b", "seed": 13, "learning_rate_multiplier": 1.5},
            ],
            "max_concurrency": 3,
            "output_dir": str(tmp_path / "sweep"),
        }
    )
    result, _ = _run(params)

    rows = {r["name"]: r for r in result.rows}
    assert len(rows) == 3 and result.n_succeeded == 2 and result.n_failed == 1
    assert rows["good-a"]["status"] == rows["good-b"]["status"] == "succeeded"
    assert rows["no-such-model"]["status"] == "failed"
    assert "no-such-model" in str(rows["no-such-model"]["error"])
    assert rows["no-such-model"]["fine_tuned_model"] is None and rows["no-such-model"]["job_id"] is None
    assert result.best is not None and result.best["name"] in {"good-a", "good-b"}
