"""Fixtures for the reliability tests: a Prefect harness and a backend that injects 20% mixed faults."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from tests.reliability.reliability_kit import CLIENT_TIMEOUT_S, SLOW_S

FAULT_SEED = 1234


@pytest.fixture(scope="module")
def faulty_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """A real backend failing 20% of every route group's requests with all fault kinds (fixed seed)."""
    settings = BackendSettings(
        data_dir=tmp_path_factory.mktemp("faulty-backend"),
        fault_rates="all=0.2",
        fault_seed=FAULT_SEED,
        fault_slow_s=SLOW_S,
        fault_retry_after_s=0.2,
        metrics_every_n_steps=2,
    )
    with start_backend(settings, port=0) as rb:
        yield rb


@pytest.fixture
def remote_env(monkeypatch: pytest.MonkeyPatch, faulty_backend: RunningBackend) -> None:
    """Point the flow's client at the faulty backend (remote mode) with a short read timeout."""
    monkeypatch.setenv("MKA1_API_KEY", faulty_backend.api_key.get_secret_value())
    monkeypatch.setenv("MKA1_TIMEOUT_S", str(CLIENT_TIMEOUT_S))
    for name in ("FTPIPE_BACKEND_PORT", "FTPIPE_BACKEND_DATA_DIR", "MKA1_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
