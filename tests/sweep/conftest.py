"""Fixtures for the sweep tests: one Prefect harness and one embedded backend per session, tiny datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.launcher import RunningBackend, free_port, start_backend
from backend.settings import BackendSettings
from tests.jsonl_data import chat_example, write_jsonl

COLOURS = ("blue", "red", "green")


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """An embedded backend on a temp data dir; flows (and their subprocesses) reuse it through the env."""
    data_dir = tmp_path_factory.mktemp("sweep-backend")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTPIPE_BACKEND_DATA_DIR", str(data_dir))
        mp.setenv("FTPIPE_BACKEND_PORT", str(free_port()))
        mp.setenv("FTPIPE_BACKEND_WORKER_CONCURRENCY", "2")
        mp.delenv("FTPIPE_BACKEND_API_KEY", raising=False)
        with start_backend(BackendSettings()) as rb:
            yield rb


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train (12) + validation (10) examples: a local:micro-chat epoch over them takes seconds."""
    d = tmp_path_factory.mktemp("sweep-ds")
    write_jsonl(d / "train.jsonl", [chat_example(i, COLOURS) for i in range(12)])
    write_jsonl(d / "validation.jsonl", [chat_example(100 + i, COLOURS) for i in range(10)])
    return d


def base_params(dataset: Path, tmp: Path, **overrides: object) -> dict[str, object]:
    """FineTuneParams data for a fast run: micro-chat, 1 epoch, quick polling, temp state/output dirs."""
    data: dict[str, object] = {
        "dataset_dir": str(dataset),
        "model": "local:micro-chat",
        "n_epochs": 1,
        "batch_size": 4,
        "poll_interval_s": 0.3,
        "poll_max_interval_s": 1.0,
        "wait_timeout_s": 300,
        "state_dir": str(tmp / "state"),
        "output_dir": str(tmp / "out"),
        # These tests are about sweep and deployment mechanics: a 1-epoch micro-chat model does not beat
        # its base on the eval set, so the default quality gate (and the eval it needs) stays off here.
        "evaluate": False,
        "gate_min_improvement": None,
    }
    data.update(overrides)
    return data
