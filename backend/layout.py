"""Where the backend keeps things under its data_dir (imported by the API process, workers and the launcher)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
        """Create the directories (private to this user)."""
        for d in (self.root, self.files, self.tmp, self.jobs, self.logs):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
