"""Job state changes written to SQLite; shared by the API process and the worker processes."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from backend.db import Database, new_event_id, now


def add_event(
    db: Database,
    job_id: str,
    owner: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
    conn: sqlite3.Connection | None = None,
) -> str:
    """Append one job event; returns its id. Pass ``conn`` to write inside an open transaction."""
    event_id = new_event_id()
    (conn or db.conn()).execute(
        "INSERT INTO events (id, owner, job_id, created_at, level, message, type, data) VALUES (?,?,?,?,?,?,?,?)",
        (
            event_id,
            owner,
            job_id,
            now(),
            level,
            message,
            type,
            json.dumps(data) if data is not None else None,
        ),
    )
    return event_id


def fail_job(
    db: Database,
    job_id: str,
    code: str,
    message: str,
    param: str | None = None,
    *,
    from_statuses: tuple[str, ...],
) -> bool:
    """Move a job to ``failed`` with an error object, if it is still in one of ``from_statuses``."""
    marks = ",".join("?" * len(from_statuses))
    with db.tx() as conn:
        row = conn.execute(
            f"SELECT owner FROM jobs WHERE id = ? AND status IN ({marks})", (job_id, *from_statuses)
        ).fetchone()
        if row is None:
            return False
        error = {"code": code, "message": message, "param": param}
        conn.execute(
            "UPDATE jobs SET status='failed', error=?, finished_at=?, estimated_finish=NULL, worker_pid=NULL WHERE id=?",
            (json.dumps(error), now(), job_id),
        )
        add_event(db, job_id, row["owner"], f"Fine-tuning job failed: {message}", level="error", conn=conn)
    return True
