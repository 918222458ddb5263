"""The job lifecycle: which status may follow which, and the one function that moves a job (with its events).

Every status change of a job goes through `transition`, in the API process and in the workers alike. It
runs inside a write transaction (``BEGIN IMMEDIATE``) and updates the row only while it still holds the
status it was read with (compare-and-set), so two writers racing on one job cannot both win. Losing such
a race, or asking for a move the table forbids, raises `InvalidTransition`; the route layer turns that
into a 409 and `JobNotFound` into a 404.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from backend.db import Database, new_event_id, now
from contract.wire import TERMINAL_STATUSES

# status -> the statuses it may become. A terminal status has no way out.
TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "validating_files": frozenset({"queued", "failed", "cancelled"}),
    "queued": frozenset({"running", "cancelled"}),
    # queued again: the backend shut down mid-training (resumes from its checkpoint)
    "running": frozenset({"succeeded", "failed", "cancelled", "paused", "queued"}),
    "paused": frozenset({"queued", "cancelled"}),
    **{status: frozenset() for status in TERMINAL_STATUSES},
}

# Columns every entry into a status resets (a caller's `changes` win). Only a running job has a worker
# and a finish estimate; a finished job records when it finished.
_ON_ENTRY: Final[Mapping[str, Mapping[str, Any]]] = {
    "queued": {"worker_pid": None, "estimated_finish": None},
    "paused": {"worker_pid": None, "estimated_finish": None},
    **{status: {"estimated_finish": None} for status in TERMINAL_STATUSES},
}
# Columns a transition may set besides the status (guards the SQL built from `changes`).
_COLUMNS: Final = frozenset(
    {
        "control",
        "resume",
        "worker_pid",
        "started_at",
        "finished_at",
        "estimated_finish",
        "error",
        "fine_tuned_model",
        "trained_tokens",
        "result_files",
        "hyperparameters",
    }
)
_DONE: Final = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}


class JobNotFound(LookupError):
    """No such job (or not this owner's: the two are indistinguishable on purpose)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"No fine_tuning_job found with id '{job_id}'.")
        self.job_id = job_id


class InvalidTransition(Exception):
    """The job's status does not allow the requested move (or changed before it could be made)."""

    def __init__(
        self, job_id: str, current: str, target: str, allowed: Collection[str], action: str | None = None
    ) -> None:
        if current in TERMINAL_STATUSES:
            why = "the job has already finished"
        elif action in _DONE:
            why = f"only a {' or '.join(sorted(allowed))} job can be {_DONE[action]}"
        else:
            why = f"a {current} job cannot become {target}"
        super().__init__(f"Cannot {action or 'change'} a job whose status is '{current}': {why}.")
        self.job_id = job_id
        self.current = current
        self.target = target
        self.action = action


def load_job(conn: sqlite3.Connection, job_id: str, owner: str | None = None) -> sqlite3.Row:
    """The job row (this owner's when ``owner`` is given) or JobNotFound."""
    if owner is None:
        row: sqlite3.Row | None = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    else:
        row = conn.execute("SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)).fetchone()
    if row is None:
        raise JobNotFound(job_id)
    return row


def check(
    job: sqlite3.Row, target: str, expect: Collection[str] | None = None, action: str | None = None
) -> None:
    """Raise InvalidTransition unless ``job`` may become ``target`` now (and is in one of ``expect``)."""
    current = job["status"]
    allowed = TRANSITIONS.get(current, frozenset())
    if target not in allowed or (expect is not None and current not in expect):
        sources = expect if expect is not None else [s for s, nxt in TRANSITIONS.items() if target in nxt]
        raise InvalidTransition(job["id"], current, target, sources, action)


def add_event(
    conn: sqlite3.Connection,
    job_id: str,
    owner: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> str:
    """Append one job event; returns its id."""
    event_id = new_event_id()
    conn.execute(
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


def transition(
    conn: sqlite3.Connection,
    job: sqlite3.Row,
    target: str,
    events: str | Sequence[str] = (),
    *,
    expect: Collection[str] | None = None,
    action: str | None = None,
    changes: Mapping[str, Any] | None = None,
    level: str = "info",
) -> None:
    """Move ``job`` (read in this write transaction) to ``target``, set ``changes`` and write ``events``.

    Raises InvalidTransition when the table forbids the move, the job is not in one of ``expect``, or its
    status changed since it was read. Nothing is written then.
    """
    check(job, target, expect, action)
    values = {**_ON_ENTRY.get(target, {}), **(changes or {})}
    if target in TERMINAL_STATUSES:
        values.setdefault("finished_at", now())
    unknown = set(values) - _COLUMNS
    if unknown:
        raise ValueError(f"transition cannot set {sorted(unknown)}")
    assignments = ", ".join(["status=?", *(f"{column}=?" for column in values)])
    changed = conn.execute(
        f"UPDATE jobs SET {assignments} WHERE id=? AND status=?",
        (target, *values.values(), job["id"], job["status"]),
    ).rowcount
    if changed != 1:
        current = load_job(conn, job["id"])["status"]
        raise InvalidTransition(job["id"], current, target, [job["status"]], action)
    for message in [events] if isinstance(events, str) else events:
        add_event(conn, job["id"], job["owner"], message, level=level)


def fail(
    db: Database,
    job_id: str,
    code: str,
    message: str,
    param: str | None = None,
    *,
    expect: Collection[str],
) -> bool:
    """Move a job to ``failed`` with an error object if it is still in one of ``expect``; False otherwise."""
    with db.tx() as conn:
        job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if job is None or job["status"] not in expect:
            return False
        transition(
            conn,
            job,
            "failed",
            f"Fine-tuning job failed: {message}",
            expect=expect,
            changes={
                "error": json.dumps({"code": code, "message": message, "param": param}),
                "worker_pid": None,
            },
            level="error",
        )
    return True
