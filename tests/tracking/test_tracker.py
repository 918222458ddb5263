"""Tracker against a real SQLite MLflow store and against a server that is not there."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tracking.settings import TrackingSettings, TrackingTarget, resolve_target
from tracking.tracker import Point, Tracker, open_client


def _target(tmp_path: Path, **kw: object) -> TrackingTarget:
    settings = TrackingSettings(
        enabled=True, uri=f"sqlite:///{tmp_path / 'mlflow.db'}", flush_interval_s=0.05, **kw
    )
    target = resolve_target(settings)
    assert target is not None
    return target


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_points_params_tags_and_artifacts_land_in_the_store(tmp_path: Path) -> None:
    target = _target(tmp_path)
    warnings: list[str] = []
    tracker = Tracker(target, warn=warnings.append)
    tracker.start(run_name="tiny-chat-s42", tags={"model": "local:tiny-chat"}, params={"seed": "42"})
    tracker.log_points(Point("train_loss", 3.0 - s / 10, s, 1_700_000_000_000 + s) for s in (10, 20))
    assert tracker.flush(wait_s=120)
    client = open_client(target)
    run = tracker.run
    assert run is not None and run.tracking_uri == target.uri
    assert [m.step for m in client.get_metric_history(run.run_id, "train_loss")] == [10, 20]
    tracker.log_points([Point("train_loss", 1.0, 25, 1_700_000_000_025)])
    tracker.log_params({"seed": "42", "n_epochs": "3"})  # seed again with the same value: no error
    (tmp_path / "result.json").write_text("{}")
    tracker.log_artifacts([tmp_path / "result.json", tmp_path / "missing.png"])
    finished = tracker.finish()
    assert finished == run and not warnings
    data = client.get_run(run.run_id)
    assert data.info.status == "FINISHED" and data.info.run_name == "tiny-chat-s42"
    assert data.data.params == {"seed": "42", "n_epochs": "3"}
    assert data.data.tags["model"] == "local:tiny-chat"
    assert [m.step for m in client.get_metric_history(run.run_id, "train_loss")] == [10, 20, 25]
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["result.json"]
    # Artifacts sit beside the database, not in the current directory.
    assert (tmp_path / "mlflow-artifacts").is_dir() and not Path("mlruns").exists()


def test_unreachable_server_warns_once_and_never_blocks(tmp_path: Path) -> None:
    target = resolve_target(
        TrackingSettings(
            enabled=True,
            uri=f"http://127.0.0.1:{_free_port()}",
            flush_interval_s=0.05,
            timeout_s=1,
            max_retries=0,
        )
    )
    assert target is not None
    warnings: list[str] = []
    started = time.monotonic()
    tracker = Tracker(target, warn=warnings.append)
    tracker.start(run_name="r", params={"seed": "1"})
    for step in range(50):
        tracker.log_points([Point("train_loss", 1.0, step, 0)])
    queued = time.monotonic() - started
    assert tracker.finish(wait_s=30) is None
    assert queued < 0.5  # the caller only queues
    assert len(warnings) == 1 and "tracking is off" in warnings[0] and "127.0.0.1" in warnings[0]
    assert not tracker.active


def test_disabled_and_secret_free_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_target(TrackingSettings(enabled=False)) is None
    target = resolve_target(TrackingSettings(enabled=True, uri="https://user:pw@mlflow.example.com:5000"))
    assert target is not None and target.display_uri == "https://mlflow.example.com:5000"
    monkeypatch.setenv("MKA1_BASE_URL", "https://gw.example.com/api/v1/llm")
    monkeypatch.setenv("MKA1_API_KEY", "sk-secret")
    mka1 = resolve_target(TrackingSettings(enabled=True, uri="mka1"))
    assert mka1 is not None and mka1.uri == "https://gw.example.com"
    assert mka1.token is not None and "sk-secret" not in repr(mka1)
