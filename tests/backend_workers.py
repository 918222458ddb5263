"""Hold a running backend's training workers still, so a test decides how far a job gets.

Tests that kill, restart or interrupt the backend around a running job need the job still running when the
blow lands, but the micro model trains a whole job in a few seconds: on a fast idle machine it used to
finish before the test reacted (and the kill/restart tests then failed at random). `frozen_when` advances
the workers in short slices and checks the test's condition only while they are stopped (SIGSTOP), so the
job moves at most one slice past the moment the condition first held, and not at all until the block ends.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import psutil
import pytest

from backend.layout import Layout

T = TypeVar("T")
SLICE_S = 0.05


class Server(Protocol):
    """A running backend server process: a `RunningBackend`, or a test's own ``ftpipe backend serve``."""

    data_dir: Path

    @property
    def pid(self) -> int | None: ...


def training_workers(rb: Server) -> list[psutil.Process]:
    """The backend's training worker processes (its spawned children; the resource tracker is not one)."""
    assert rb.pid is not None, "the backend is not running"
    workers = []
    for proc in psutil.Process(rb.pid).children():
        try:
            if any("spawn_main" in a for a in proc.cmdline()):
                workers.append(proc)
        except psutil.NoSuchProcess:  # a worker that just died (a zombie until the pool reaps it)
            continue
    return workers


@contextlib.contextmanager
def frozen_when(
    rb: Server,
    condition: Callable[[], T | None],
    timeout: float = 240.0,
    explain: Callable[[], str] = lambda: "",
) -> Iterator[T]:
    """Run the workers until ``condition()`` is truthy, then keep them stopped for the block; yields its value.

    The workers are resumed when the block ends, also when the backend was killed inside it (they then find
    their server gone and exit on their own). On timeout the test fails with ``explain()`` appended.
    """
    workers = training_workers(rb)
    assert workers, "the backend has no training worker"
    deadline = time.monotonic() + timeout
    try:
        while True:
            for proc in workers:
                proc.suspend()
            # A worker stopped inside a write transaction would block every write of the server for the block.
            value = condition() if _write_lock_free(rb) else None
            if value:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"condition not met within {timeout}s\n{explain()}")
            for proc in workers:
                proc.resume()
            time.sleep(SLICE_S)
        yield value
    finally:
        for proc in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.resume()


def _write_lock_free(rb: Server) -> bool:
    """True when no process holds the backend database's write lock right now."""
    conn = sqlite3.connect(Layout(rb.data_dir).db_path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:  # "database is locked"
        return False
    finally:
        conn.close()
