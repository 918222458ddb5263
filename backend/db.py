"""SQLite persistence: schema, ids and a thread-safe connection helper.

Every table carries an ``owner`` column and an INTEGER ``seq`` primary key: ``seq`` is the monotonic
order used by list endpoints, so ``after=<id>`` cursors are exact even when timestamps tie.
The database runs in WAL mode so the API process and the worker processes can read and write at once.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'processed',
    status_details TEXT,
    path TEXT NOT NULL,
    sha256 TEXT
);
CREATE INDEX IF NOT EXISTS files_owner ON files(owner, seq);
CREATE INDEX IF NOT EXISTS files_sha256 ON files(owner, sha256);

CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    model TEXT NOT NULL,
    base_model_ref TEXT NOT NULL,
    fine_tuned_model TEXT,
    status TEXT NOT NULL,
    training_file TEXT NOT NULL,
    validation_file TEXT,
    method_type TEXT NOT NULL,
    hyperparameters TEXT NOT NULL,
    seed INTEGER NOT NULL,
    suffix TEXT,
    metadata TEXT,
    integrations TEXT NOT NULL DEFAULT '[]',
    result_files TEXT NOT NULL DEFAULT '[]',
    trained_tokens INTEGER,
    estimated_finish INTEGER,
    error TEXT,
    control TEXT NOT NULL DEFAULT 'continue',
    resume INTEGER NOT NULL DEFAULT 0,
    worker_pid INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, seq);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);

CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);

CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    step_number INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    model_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_job ON checkpoints(job_id, seq);

CREATE TABLE IF NOT EXISTS models (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('base', 'fine-tuned', 'checkpoint')),
    job_id TEXT
);

CREATE TABLE IF NOT EXISTS responses (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    model TEXT NOT NULL,
    conversation TEXT NOT NULL,
    body TEXT NOT NULL,
    input_items TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS responses_owner ON responses(owner, seq);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    route TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    object_id TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (owner, key, route)
);
"""

# Columns added after a table first shipped: (table, column, declaration). A data_dir written by an
# older backend gets them on startup (existing rows read NULL / the default).
ADDED_COLUMNS = (
    ("files", "sha256", "TEXT"),
    ("responses", "input_items", "TEXT NOT NULL DEFAULT '[]'"),
)


def now() -> int:
    """Unix seconds, the wire's timestamp unit."""
    return int(time.time())


def new_file_id() -> str:
    """``file-`` + 24 hex digits."""
    return "file-" + secrets.token_hex(12)


def new_job_id() -> str:
    """``ftjob_`` + 32 hex digits, as the MKA1 guide shows."""
    return "ftjob_" + secrets.token_hex(16)


def new_checkpoint_id() -> str:
    """``ftckpt_`` + 24 hex digits."""
    return "ftckpt_" + secrets.token_hex(12)


def new_event_id() -> str:
    """``ftevent-`` + 24 hex digits."""
    return "ftevent-" + secrets.token_hex(12)


def new_response_id() -> str:
    """``resp_`` + 32 hex digits."""
    return "resp_" + secrets.token_hex(16)


class Database:
    """One SQLite file shared by threads (a connection per thread) and processes (WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()

    def init_schema(self) -> None:
        """Create tables if needed and switch the file to WAL mode."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 before SQLite opens it: SQLite gives its -wal/-shm files the database's mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = self.conn()
        conn.execute("PRAGMA journal_mode=WAL")
        # Old tables first gain their new columns, so the script's indexes on them can be created.
        for table, column, decl in ADDED_COLUMNS:
            have = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
            if have and column not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        conn.executescript(SCHEMA)

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; use `tx()` for multi-statement writes)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=True)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (BEGIN IMMEDIATE) so read-modify-write is atomic."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """First row of a query, or None."""
        row: sqlite3.Row | None = self.conn().execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """All rows of a query."""
        return list(self.conn().execute(sql, params).fetchall())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement; returns the number of rows changed."""
        return self.conn().execute(sql, params).rowcount

    def close(self) -> None:
        """Close this thread's connection (other threads' close when they exit)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
