"""Fixtures for the services tests: a private services dir and backend data dir, stopped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from backend.launcher import free_port
from services.manager import stop_services

REPO = Path(__file__).resolve().parents[2]

# A client process: leases the embedded backend through the one entry point, prints its URL, holds it
# until a line arrives on stdin (or it is killed).
HOLD_BACKEND = """
import sys
from flows.backend_runtime import open_connection
with open_connection() as conn:
    print(conn.settings.base_url, flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


@dataclass(frozen=True)
class ServicesEnv:
    """Where this test's services keep their state."""

    root: Path
    data_dir: Path
    port: int

    def env(self) -> dict[str, str]:
        """The environment a client subprocess needs to share this test's services."""
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def services_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServicesEnv]:
    """A services root, backend data dir and fixed backend port of this test's own; all stopped after."""
    se = ServicesEnv(tmp_path / "services", tmp_path / "backend-data", free_port())
    monkeypatch.setenv("FTPIPE_SERVICES_DIR", str(se.root))
    monkeypatch.setenv("FTPIPE_BACKEND_DATA_DIR", str(se.data_dir))
    monkeypatch.setenv("FTPIPE_BACKEND_PORT", str(se.port))
    monkeypatch.delenv("FTPIPE_BACKEND_API_KEY", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    try:
        yield se
    finally:
        stop_services(se.root, {"prefect", "backend", "runner"}, timeout_s=30)


def start_client(
    se: ServicesEnv, code: str = HOLD_BACKEND, **popen: object
) -> tuple[subprocess.Popen[str], str]:
    """Start a client process and wait for the first line it prints (its URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=se.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[call-overload]
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        raise AssertionError(f"client exited with {proc.wait(10)} before connecting")
    return proc, line


def wait_gone(pid: int, timeout_s: float) -> bool:
    """True once ``pid`` has exited (zombies count as exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False
