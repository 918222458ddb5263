"""Session-wide test setup: offline Prefect with a temporary home, no analytics."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

# Must happen before prefect is imported anywhere, so its settings pick these up.
_PREFECT_HOME = tempfile.mkdtemp(prefix="ftpipe-prefect-home-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Never let a developer's real credentials leak into tests.
os.environ.pop("MKA1_API_KEY", None)
os.environ.pop("MKA1_BASE_URL", None)
# Experiment tracking off unless a test turns it on (tests/tracking): no writes to the user's MLflow store,
# and no MLflow import costing every flow test seconds.
os.environ["FTPIPE_TRACKING_ENABLED"] = "false"
for _name in ("FTPIPE_TRACKING_URI", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN"):
    os.environ.pop(_name, None)
# Local services (Prefect server, embedded backend) live only while a run uses them, as before services were
# kept, and their state stays in a temp dir; tests/services turns keeping on where it tests it.
_SERVICES_DIR = tempfile.mkdtemp(prefix="ftpipe-services-")
os.environ["FTPIPE_SERVICES_DIR"] = _SERVICES_DIR
os.environ["FTPIPE_SERVICES_KEEP"] = "false"
# No warm runner (each one imports Prefect and stays up): the tests of the runner start theirs.
os.environ["FTPIPE_SERVICES_RUNNER"] = "false"


@pytest.fixture(scope="session", autouse=True)
def _no_services_left_behind() -> Iterator[None]:
    """Whatever a test started as a local service is stopped when the session ends."""
    yield
    from pathlib import Path

    from services.manager import stop_services

    stop_services(Path(_SERVICES_DIR), {"prefect", "backend", "runner"}, timeout_s=30)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the whole test session (starting one costs ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(autouse=True)
def _prefect_log_levels_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An in-process `ftpipe ... --quiet` lowers Prefect's loggers and sets PREFECT_LOGGING_LEVEL for the
    rest of the process (as it should for a real command); tests share one process, so undo it after each."""
    import logging

    from cli.common import _PREFECT_LEVELLED_LOGGERS

    levels = {name: logging.getLogger(name).level for name in _PREFECT_LEVELLED_LOGGERS}
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", os.environ.get("PREFECT_LOGGING_LEVEL", "INFO"))
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
