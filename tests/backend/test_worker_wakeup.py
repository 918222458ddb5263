"""A queued job wakes an idle worker at once: the API process sets the pool's ``work`` event, the worker
sleeps on it (real worker loop and SQLite; the idle poll that would otherwise find the job is an hour)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from backend_testkit import write_chat_jsonl

from backend import worker
from backend.db import Database
from backend.jobs import JobService
from backend.layout import Layout
from backend.lifecycle import load_job
from backend.settings import BackendSettings


class RecordingEvent:
    """A threading.Event that says when someone sleeps on it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.sleeping = threading.Event()

    def set(self) -> None:
        self.event.set()

    def clear(self) -> None:
        self.event.clear()

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        self.sleeping.set()
        return self.event.wait(timeout)


def _queue_job(db: Database, job_id: str) -> None:
    # Its training file is unknown: the worker fails it at once, which is all this test needs to see.
    db.execute(
        "INSERT INTO jobs (id, owner, created_at, model, base_model_ref, status, training_file, method_type,"
        " hyperparameters, seed) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            job_id,
            "o",
            1,
            "local:micro-chat",
            "local:micro-chat",
            "queued",
            "file-gone",
            "supervised",
            "{}",
            0,
        ),
    )


def _status(db: Database, job_id: str) -> str:
    row: sqlite3.Row = load_job(db.conn(), job_id)
    return str(row["status"])


def test_an_idle_worker_claims_a_job_when_woken_not_at_its_next_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "IDLE_POLL_S", 3600.0)
    monkeypatch.setattr(worker.signal, "signal", lambda *_: None)  # worker_main runs on a thread here
    layout = Layout(tmp_path / "data")
    layout.ensure()
    db = Database(layout.db_path)
    db.init_schema()
    stop, work = threading.Event(), RecordingEvent()
    args: tuple[Any, ...] = (str(layout.root), 10, None, os.getppid(), stop, None, work)
    thread = threading.Thread(target=worker.worker_main, args=args, daemon=True)
    thread.start()
    try:
        assert work.sleeping.wait(300), "the worker never went idle"
        _queue_job(db, "ftjob_woken")
        work.set()  # what WorkerPool.notify does across processes
        for _ in range(600):
            if _status(db, "ftjob_woken") != "queued":
                break
            time.sleep(0.1)
        assert _status(db, "ftjob_woken") == "failed"  # claimed (then failed: no such file), not left queued
    finally:
        stop.set()
        work.set()
        thread.join(60)
    assert not thread.is_alive(), "a stop did not wake the idle worker"


class RecordingPool:
    def __init__(self) -> None:
        self.notified = 0

    def notify(self) -> None:
        self.notified += 1


def test_the_job_service_wakes_the_pool_when_a_job_is_queued_or_resumed(tmp_path: Path) -> None:
    settings = BackendSettings(data_dir=tmp_path / "data")
    layout = Layout(settings.data_dir)
    layout.ensure()
    db = Database(layout.db_path)
    db.init_schema()
    service = JobService(settings, layout, db)
    pool = RecordingPool()
    service.pool = pool  # type: ignore[assignment]
    _queue_job(db, "ftjob_paused")
    db.execute("UPDATE jobs SET status='paused' WHERE id='ftjob_paused'")
    service.resume("o", "ftjob_paused")
    assert _status(db, "ftjob_paused") == "queued" and pool.notified == 1
    train = write_chat_jsonl(tmp_path / "train.jsonl")
    db.execute(
        "INSERT INTO files (id, owner, created_at, bytes, filename, purpose, path) VALUES (?,?,?,?,?,?,?)",
        ("file-ok", "o", 1, train.stat().st_size, "train.jsonl", "fine-tune", str(train)),
    )
    _queue_job(db, "ftjob_new")
    db.execute("UPDATE jobs SET status='validating_files', training_file='file-ok' WHERE id='ftjob_new'")
    service._validate_inner("ftjob_new")
    assert _status(db, "ftjob_new") == "queued" and pool.notified == 2
