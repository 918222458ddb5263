"""Where the backend keeps things under its data_dir (imported by the API process, workers and the launcher)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Everything under data_dir is private to the user running the backend: it holds uploaded datasets,
# stored Responses conversations, metadata and events.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700, also when an older version left it 0755."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


@dataclass
class Layout:
    """Where things live under data_dir."""

    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "backend.sqlite3"

    @property
    def files(self) -> Path:
        return self.root / "files"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def server_log(self) -> Path:
        """stdout/stderr of a launcher-started server (mode 0600)."""
        return self.logs / "server.log"

    def ensure(self) -> None:
        """Create the directories and tighten what exists to this user only (0700 dirs, 0600 database)."""
        for d in (self.root, self.files, self.tmp, self.jobs, self.logs):
            private_dir(d)
        for db_file in self.root.glob(self.db_path.name + "*"):  # the database and its -wal/-shm files
            os.chmod(db_file, PRIVATE_FILE_MODE)
