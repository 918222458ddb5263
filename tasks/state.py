"""Small JSON indexes in the local state dir: uploaded files by content hash, jobs by idempotency key,
finished runs by outcome digest.

They make re-runs cheap (reuse a file id, reattach to a job after a crash). They are hints only: every
entry is verified against the server before use, so a stale or deleted file is harmless.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import platformdirs

UPLOADS_FILE = "uploads.json"
JOBS_FILE = "jobs.json"
FINISHED_RUNS_FILE = "finished-runs.json"
_CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large datasets never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def default_state_dir() -> Path:
    """``$FTPIPE_STATE_DIR`` or the platform's per-user state dir."""
    env = os.environ.get("FTPIPE_STATE_DIR")
    return Path(env) if env else Path(platformdirs.user_state_dir("ftpipe"))


class JsonIndex:
    """A dict persisted as one JSON file, updated under an exclusive lock and replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        """Current contents; a missing or corrupt file reads as empty (it is only a cache)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> Any:
        """One entry or None."""
        return self.read().get(key)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(self.path.suffix + ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put(self, key: str, value: Any) -> None:
        """Set one entry (read-modify-write under the lock, so concurrent runs do not lose entries)."""
        with self._locked():
            data = self.read()
            data[key] = value
            self._write(data)

    def update(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``change`` to the whole dict in place, under the lock (several entries at once)."""
        with self._locked():
            data = self.read()
            change(data)
            self._write(data)

    def delete(self, key: str) -> None:
        """Drop one entry if present."""
        with self._locked():
            data = self.read()
            if data.pop(key, None) is not None:
                self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            # A failed write must not leave a stray temp file beside the index (the index itself is intact).
            Path(tmp).unlink(missing_ok=True)
            raise


LOCKS_DIR = "locks"


@contextmanager
def key_lock(state_dir: Path, key: str) -> Iterator[None]:
    """Hold an exclusive per-key lock on this machine: identical runs started together take turns at
    look-up + create + record, so the second finds what the first made instead of making it again."""
    locks = state_dir / LOCKS_DIR
    locks.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock"
    with open(locks / name, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def uploads_index(state_dir: Path) -> JsonIndex:
    """``<state_dir>/uploads.json``: (server, end user, sha256) -> file id."""
    return JsonIndex(state_dir / UPLOADS_FILE)


def jobs_index(state_dir: Path) -> JsonIndex:
    """``<state_dir>/jobs.json``: (server, end user, idempotency key) -> job id + flow run id."""
    return JsonIndex(state_dir / JOBS_FILE)


def finished_runs_index(state_dir: Path) -> JsonIndex:
    """``<state_dir>/finished-runs.json``: outcome digest -> a finished run's job, model and result.json
    (``cli/rerun.py``: an unchanged ``ftpipe run`` is answered from it)."""
    return JsonIndex(state_dir / FINISHED_RUNS_FILE)


def scoped_key(server_id: str, on_behalf_of: str | None, key: str) -> str:
    """Index key: the same content on another server or for another end user is a different object."""
    return f"{server_id}|{on_behalf_of or ''}|{key}"
