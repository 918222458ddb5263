"""A sweep's parent run nests the configs' runs (found by flow-run id) and carries the best metric."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.experiment import track_sweep
from tracking.settings import TrackingSettings, resolve_target
from tracking.tracker import Tracker, experiment_id, open_client


def test_children_are_nested_under_the_sweep_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTPIPE_TRACKING_ENABLED", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("FTPIPE_TRACKING_FLUSH_INTERVAL_S", "0.05")
    target = resolve_target(TrackingSettings())
    assert target is not None
    children = {}
    for flow_run_id in ("fr-a", "fr-b", "fr-other"):
        tracker = Tracker(target)
        tracker.start(run_name=flow_run_id, tags={"flow_run_id": flow_run_id})
        run = tracker.finish(wait_s=120)
        assert run is not None
        children[flow_run_id] = run.run_id
    (tmp_path / "sweep.csv").write_text("name,full_valid_loss\na,1.0\n")
    warnings: list[str] = []
    ref = track_sweep(
        "lr-grid",
        ["fr-a", "fr-b"],
        params={"select_by": "full_valid_loss"},
        best={"best.full_valid_loss": 1.0},
        artifacts=[tmp_path / "sweep.csv"],
        warn=warnings.append,
    )
    assert ref is not None and not warnings
    store = open_client(target)
    parents = {
        r.info.run_name: r.data.tags.get("mlflow.parentRunId")
        for r in store.search_runs([experiment_id(store, target)])
    }
    assert parents == {"fr-a": ref.run_id, "fr-b": ref.run_id, "fr-other": None, "sweep-lr-grid": None}
    parent = store.get_run(ref.run_id)
    assert parent.data.metrics["best.full_valid_loss"] == 1.0 and parent.data.tags["sweep"] == "lr-grid"
    assert [a.path for a in store.list_artifacts(ref.run_id)] == ["sweep.csv"]
