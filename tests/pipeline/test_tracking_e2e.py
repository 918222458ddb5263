"""End to end with tracking on: the real backend trains while the MLflow run's train_loss history grows,
and the finished history has one point per logged step, the last step included."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from client import ClientSettings, MKA1Client
from flows.fine_tune import fine_tune
from flows.params import FineTuneParams
from tracking.settings import TrackingSettings, resolve_target
from tracking.tracker import experiment_id, open_client

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "customer-support"
USER = "tracking-e2e"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """A real backend that reports metrics every 2 steps, found by the flow through FTPIPE_BACKEND_*."""
    data_dir = tmp_path_factory.mktemp("backend-data")
    settings = BackendSettings(data_dir=data_dir, port=0, metrics_every_n_steps=2)
    with start_backend(settings) as rb, pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTPIPE_BACKEND_DATA_DIR", str(data_dir))
        mp.setenv("FTPIPE_BACKEND_PORT", str(rb.port))
        yield rb


def _dataset(folder: Path) -> Path:
    folder.mkdir()
    for name, n in (("train.jsonl", 60), ("validation.jsonl", 10)):
        lines = (SAMPLE / name).read_text(encoding="utf-8").splitlines()[:n]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_train_loss_history_grows_while_the_job_runs(
    backend: RunningBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTPIPE_TRACKING_ENABLED", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("FTPIPE_TRACKING_FLUSH_INTERVAL_S", "0.2")
    target = resolve_target(TrackingSettings())
    assert target is not None
    store = open_client(target)
    experiment = experiment_id(store, target)  # the store exists before the flow (it opens in seconds)
    params = FineTuneParams(
        dataset_dir=_dataset(tmp_path / "ds"),
        model="local:micro-chat",
        seed=11,
        n_epochs=3,
        batch_size=4,
        output_dir=tmp_path / "out",
        state_dir=tmp_path / "state",
        poll_interval_s=0.2,
        poll_max_interval_s=0.5,
        wait_timeout_s=600,
        on_behalf_of=USER,
    )
    samples: list[tuple[str, int]] = []  # (job status, train_loss points in the store) while the flow runs
    done = threading.Event()

    def watch() -> None:
        api = MKA1Client(
            ClientSettings(base_url=backend.base_url, api_key=backend.api_key, on_behalf_of=USER)
        )
        while not done.is_set():
            try:
                runs = store.search_runs([experiment])
                job_id = runs[0].data.tags.get("job_id") if runs else None
                if job_id:
                    status = str(api.jobs.retrieve(job_id).status)
                    samples.append((status, len(store.get_metric_history(runs[0].info.run_id, "train_loss"))))
            except Exception:
                pass  # the store may be busy for a moment; the next sample will do
            time.sleep(0.3)
        api.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        record = fine_tune(**params.flow_arguments())
    finally:
        done.set()
        watcher.join(10)

    assert record.tracking is not None
    history = store.get_metric_history(record.tracking.run_id, "train_loss")
    steps = pd.read_parquet(record.outputs["metrics_parquet"])
    assert sorted(m.step for m in history) == list(steps["step"])  # one point per logged step
    assert max(m.step for m in history) == record.total_steps  # the last step included
    # While the job was still running, the store already held part of the curve.
    running = [n for status, n in samples if status == "running"]
    assert any(0 < n < len(history) for n in running), samples
    params_logged: dict[str, Any] = store.get_run(record.tracking.run_id).data.params
    assert params_logged["base_model"] == "local:micro-chat" and params_logged["seed"] == "11"
    assert params_logged["n_epochs"] == "3"
