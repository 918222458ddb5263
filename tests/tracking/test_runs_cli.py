"""``ftpipe runs list|compare`` against a real SQLite MLflow store seeded with two tracked runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from tracking.settings import TrackingSettings, resolve_target
from tracking.tracker import Point, Tracker


def _seed(target: object, name: str, job_id: str, seed: int, losses: list[float]) -> str:
    tracker = Tracker(target)  # type: ignore[arg-type]
    tracker.start(
        run_name=name,
        tags={"job_id": job_id, "model": "local:tiny-chat"},
        params={"base_model": "local:tiny-chat", "seed": str(seed), "n_epochs": "3"},
    )
    tracker.log_points(
        Point("train_loss", v, (i + 1) * 10, 1_700_000_000_000 + i) for i, v in enumerate(losses)
    )
    tracker.log_metrics({"eval.score": 0.5 + seed / 100})
    run = tracker.finish(wait_s=120)
    assert run is not None
    return run.run_id


def test_list_and_compare_by_job_id_and_run_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("COLUMNS", "400")
    target = resolve_target(TrackingSettings(enabled=True, flush_interval_s=0.05))
    _seed(target, "tiny-chat-s1", "ftjob_one", 1, [3.0, 2.0, 1.5])
    second = _seed(target, "tiny-chat-s2", "ftjob_two", 2, [3.1, 2.2, 1.7, 1.6])

    assert main(["runs", "list"]) == 0
    listed = capsys.readouterr().out
    assert listed.index("tiny-chat-s2") < listed.index("tiny-chat-s1")  # newest first

    png = tmp_path / "cmp.png"
    assert main(["runs", "compare", "ftjob_one", second, "--output", str(png)]) == 0
    out = capsys.readouterr().out
    assert "ftjob_one" in out and "ftjob_two" in out and "1.5000" in out and "1.6000" in out
    assert "0.5100" in out and "0.5200" in out  # eval scores
    assert str(png) in out.replace("\n", "") and png.read_bytes().startswith(b"\x89PNG")

    assert main(["runs", "compare", "ftjob_missing"]) == 1
    assert "ftjob_missing" in capsys.readouterr().out
