"""Where a local service's state lives: its record, its clients' leases, its start/stop lock, its log.

One folder per service under the services root (``prefect``, ``backend-<hash of its data dir>``), 0700,
every file 0600 and replaced atomically. A lease is one file per client process carrying the client's pid
and process start time, so a lease of a process that died (kill -9, OOM) reads as gone, and a reused pid
does not revive it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psutil

RECORD_FILE = "record.json"
IDLE_FILE = "idle.json"
LOCK_FILE = "lock"
LOG_FILE = "server.log"
LEASES_DIR = "leases"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# Two start times of one process read through psutil differ by rounding only.
_START_TIME_SLACK_S = 1.0

Kind = Literal["prefect", "backend", "runner"]
KINDS: tuple[Kind, ...] = ("prefect", "backend", "runner")


class ServiceError(RuntimeError):
    """A service could not be started, reached or stopped; the message says which and what to do."""


class ServiceBusy(ServiceError):
    """Another process holds the service's lock for longer than we wait (a start or a stop in progress)."""


def now_iso() -> str:
    """Current UTC time, ISO 8601, seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def process_start_time(pid: int) -> float | None:
    """The process's start time (epoch seconds), None when it does not exist."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def process_alive(pid: int, started: float | None = None) -> bool:
    """True while ``pid`` runs (and, given ``started``, is still the process that started then)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        actual = proc.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True
    return started is None or abs(actual - started) <= _START_TIME_SLACK_S


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename), mode 0600, folders 0700."""
    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.chmod(tmp, PRIVATE_FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """The file's JSON object, or None when it is missing or unreadable (it is rewritten, never trusted)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and make the folder itself 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    with contextlib.suppress(OSError):
        os.chmod(path, PRIVATE_DIR_MODE)


@dataclass(frozen=True)
class ServiceRecord:
    """A running service as its starter wrote it down."""

    name: str
    kind: Kind
    pid: int
    pid_started: float
    url: str
    port: int
    started_at: str
    owner_pid: int
    owner_command: str
    idle_timeout_s: float
    log_path: str
    ui_url: str | None = None
    data_dir: str | None = None
    # Digest of the settings it was started with (no secrets): a client wanting others restarts an unused one.
    config_hash: str = ""

    def alive(self) -> bool:
        """True while the recorded process runs."""
        return process_alive(self.pid, self.pid_started)

    def uptime_s(self) -> float:
        """Seconds since the process started."""
        return max(0.0, time.time() - self.pid_started)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceRecord | None:
        """The record, or None when the file holds something else (an older or damaged record)."""
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError:
            return None


@dataclass(frozen=True)
class Lease:
    """One client process using a service."""

    pid: int
    pid_started: float
    command: str
    since: str
    path: Path = field(compare=False)

    def alive(self) -> bool:
        """True while the client process runs."""
        return process_alive(self.pid, self.pid_started)


class ServiceDir:
    """The folder of one service: record, leases, lock and log."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.path = root / name
        self.record_path = self.path / RECORD_FILE
        self.idle_path = self.path / IDLE_FILE
        self.lock_path = self.path / LOCK_FILE
        self.log_path = self.path / LOG_FILE
        self.leases_path = self.path / LEASES_DIR

    def spawn(
        self, argv: Sequence[str], env: Mapping[str, str], command: str, cwd: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start the service's process detached, its output appended to the service's log after a line naming
        who started it; out of the terminal's process group, so a Ctrl-C there does not reach it."""
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "ab") as log:
            log.write(f"--- {now_iso()} started by {command} (pid {os.getpid()})\n".encode())
            log.flush()
            return subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )

    # record -------------------------------------------------------------------------------------
    def read_record(self) -> ServiceRecord | None:
        """The record as written, alive or not."""
        data = read_json(self.record_path)
        return ServiceRecord.from_json(data) if data is not None else None

    def live_record(self) -> ServiceRecord | None:
        """The record while its process runs; a stale record is removed."""
        record = self.read_record()
        if record is None:
            return None
        if record.alive():
            return record
        self.remove_record(record.pid)
        return None

    def write_record(self, record: ServiceRecord) -> None:
        """Replace the record."""
        write_private_json(self.record_path, asdict(record))

    def remove_record(self, pid: int | None = None) -> None:
        """Remove the record (only if it still names ``pid``, when given)."""
        if pid is not None:
            current = self.read_record()
            if current is not None and current.pid != pid:
                return
        with contextlib.suppress(FileNotFoundError):
            self.record_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.idle_path.unlink()

    # leases -------------------------------------------------------------------------------------
    def add_lease(self, command: str, pid: int | None = None) -> Lease:
        """Record that process ``pid`` (default: this one) uses the service."""
        pid = os.getpid() if pid is None else pid
        started = process_start_time(pid)
        if started is None:
            raise ProcessLookupError(pid)
        path = self.leases_path / f"{pid}-{secrets.token_hex(4)}.json"
        lease = Lease(pid, started, command, now_iso(), path)
        data = {"pid": pid, "pid_started": started, "command": command, "since": lease.since}
        write_private_json(path, data)
        return lease

    def drop_lease(self, lease: Lease) -> None:
        """Forget one lease (a missing file is fine: someone cleaned it already)."""
        with contextlib.suppress(FileNotFoundError):
            lease.path.unlink()

    def leases(self) -> list[Lease]:
        """Leases of live clients; the files of dead ones are removed on the way."""
        live: list[Lease] = []
        try:
            paths = sorted(self.leases_path.glob("*.json"))
        except OSError:
            return live
        for path in paths:
            data = read_json(path)
            try:
                lease = Lease(
                    int(data["pid"]),  # type: ignore[index]
                    float(data["pid_started"]),  # type: ignore[index]
                    str(data.get("command", "")),  # type: ignore[union-attr]
                    str(data.get("since", "")),  # type: ignore[union-attr]
                    path,
                )
            except (TypeError, KeyError, ValueError):
                lease = None
            if lease is not None and lease.alive():
                live.append(lease)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return live

    # idle clock ---------------------------------------------------------------------------------
    def write_idle_since(self, since: float | None) -> None:
        """The host's note of when its last lease went away (None: in use)."""
        write_private_json(self.idle_path, {"idle_since": since})

    def idle_since(self) -> float | None:
        """When the service last became idle, as its host noted it; None while in use or unknown."""
        data = read_json(self.idle_path) or {}
        value = data.get("idle_since")
        return float(value) if isinstance(value, int | float) else None

    # lock ---------------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the services root and this service's folder, both 0700."""
        ensure_private_dir(self.root)
        ensure_private_dir(self.path)

    def open_lock(self) -> int:
        """An fd on the lock file (0600); flock it with ``acquire``."""
        self.ensure()
        return os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)

    @staticmethod
    def acquire(fd: int, timeout_s: float) -> bool:
        """flock ``fd`` exclusively, waiting up to ``timeout_s`` (0: try once)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)

    @contextlib.contextmanager
    def locked(self, timeout_s: float, doing: str) -> Iterator[None]:
        """Hold the service's lock: starts, reuses and stops of one service happen one at a time."""
        fd = self.open_lock()
        try:
            if not self.acquire(fd, timeout_s):
                raise ServiceBusy(
                    f"{self.name}: another ftpipe process has been starting or stopping it for over "
                    f"{timeout_s:.0f}s, so it cannot be {doing}; see 'ftpipe services status'"
                )
            yield
        finally:
            os.close(fd)  # closing the fd releases the flock


def service_name_for_backend(data_dir: Path) -> str:
    """One embedded backend per data dir: its folder name."""
    digest = hashlib.sha256(str(data_dir.expanduser().resolve()).encode()).hexdigest()[:10]
    return f"backend-{digest}"


PREFECT_SERVICE = "prefect"
RUNNER_SERVICE = "runner"


def client_label() -> str:
    """How this process names itself in a lease: ``ftpipe run``, ``pytest``, ``python -m bench``."""
    import sys

    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    name = program.parent.name if program.name == "__main__.py" else program.name  # python -m PKG
    argv = ["ftpipe" if name == "cli" else name, *sys.argv[1:2]]
    return " ".join(a for a in argv if a and not a.startswith("-"))[:80] or "python"


def config_digest(values: dict[str, str]) -> str:
    """A short, stable digest of a service's settings."""
    raw = json.dumps(values, sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def service_dirs(root: Path) -> list[ServiceDir]:
    """Every service folder under ``root`` (prefect first, then backends by name)."""
    try:
        names = sorted(p.name for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    names.sort(key=lambda n: (n != PREFECT_SERVICE, n))
    return [ServiceDir(root, n) for n in names]
