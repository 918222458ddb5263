"""Start, reuse and stop a local service under its lock; clients hold a lease while they use it.

A client first looks for a live, healthy service in the registry and leases it; otherwise it writes its
lease, starts ``python -m services.host`` in a new session (so a terminal's Ctrl-C, which signals the
foreground process group, never reaches it), waits until it answers, and records it. Releasing drops the
lease; with a lifetime of 0 the last client out also stops the service. Whatever the client does, the
host's watchdog stops the service once no live lease has been seen for its idle timeout, so a client that
was killed (its lease names a dead pid) never keeps a service alive.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from services.registry import (
    RUNNER_SERVICE,
    Kind,
    Lease,
    ServiceDir,
    ServiceError,
    ServiceRecord,
    now_iso,
    process_alive,
    process_start_time,
    service_dirs,
)

LOCK_WAIT_S = 90.0  # a stopping backend may take ~30 s to pause its workers
STOP_TIMEOUT_S = 45.0
HEALTH_TIMEOUT_S = 3.0
REUSE_HEALTH_TRIES = 4


@dataclass(frozen=True)
class Spec:
    """How to start one service: the host's arguments and environment, and where it will answer."""

    kind: Kind
    host: str
    port: int
    health_url: str
    url: str
    env: Mapping[str, str]
    idle_timeout_s: float
    ui_url: str | None = None
    data_dir: str | None = None
    config_hash: str = ""
    # The health answer names the server pid (the embedded backend's does): only our child's answer counts,
    # never another server's that already held the port.
    health_names_pid: bool = False


@dataclass(frozen=True)
class Acquired:
    """A leased service: its record, this client's lease, and whether this call started it."""

    record: ServiceRecord
    lease: Lease
    started: bool


def is_healthy(url: str, timeout_s: float = HEALTH_TIMEOUT_S, pid: int | None = None) -> bool:
    """True when ``url`` answers 2xx (and, given ``pid``, its JSON names that server pid)."""
    from client.tls import ssl_context

    try:
        response = httpx.get(url, timeout=timeout_s, verify=ssl_context())
    except httpx.HTTPError:
        return False
    if not response.is_success:
        return False
    if pid is None:
        return True
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("pid") == pid


def _answers(record: ServiceRecord, health_url: str) -> bool:
    # A busy machine can miss one probe; a server that misses several in a row is hung.
    for attempt in range(REUSE_HEALTH_TRIES):
        if is_healthy(health_url):
            return True
        if not record.alive():
            return False
        time.sleep(0.5 * (attempt + 1))
    return False


def acquire(
    sd: ServiceDir,
    command: str,
    spec_for: Callable[[], Spec],
    health_url_of: Callable[[ServiceRecord], str],
    start_timeout_s: float,
    config_hash: str = "",
) -> Acquired:
    """Lease the running service, or start it; raises ServiceError when it does not come up.

    A running service started with other settings (``config_hash``) is restarted when no client uses it,
    and shared as it is otherwise (its clients' runs are never cut short).
    """
    # Another client may be starting it right now: wait for that start (or a stop) to finish.
    with sd.locked(start_timeout_s + LOCK_WAIT_S, "started"):
        record = sd.live_record()
        if record is not None and record.config_hash != config_hash and not sd.leases():
            stop_locked(sd)
            record = None
        if record is not None:
            if _answers(record, health_url_of(record)):
                return Acquired(record, sd.add_lease(command), started=False)
            raise ServiceError(
                f"the {record.kind} service ftpipe started (pid {record.pid}, {record.url}) does not "
                f"answer; stop it with 'ftpipe services stop {record.kind}' and retry (log: {record.log_path})"
            )
        lease = sd.add_lease(command)  # before the start, so the new host's watchdog sees a client at once
        try:
            record = _start(sd, spec_for(), command, start_timeout_s)
        except BaseException:
            sd.drop_lease(lease)
            raise
        return Acquired(record, lease, started=True)


def _start(sd: ServiceDir, spec: Spec, command: str, timeout_s: float) -> ServiceRecord:
    sd.ensure()
    argv = [
        sys.executable,
        "-m",
        "services.host",
        spec.kind,
        "--dir",
        str(sd.path),
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        "--idle-timeout",
        str(spec.idle_timeout_s),
    ]
    proc = sd.spawn(argv, spec.env, command)
    deadline = time.monotonic() + timeout_s
    own_pid = proc.pid if spec.health_names_pid else None
    while not is_healthy(spec.health_url, timeout_s=1.0, pid=own_pid):
        if proc.poll() is not None:
            raise ServiceError(
                f"the {spec.kind} service exited with code {proc.returncode} while starting "
                f"(log: {sd.log_path}):\n{_log_tail(sd)}"
            )
        if time.monotonic() > deadline:
            _terminate(proc.pid, 5.0)
            raise ServiceError(
                f"the {spec.kind} service did not answer {spec.health_url} within {timeout_s:.0f}s "
                f"(log: {sd.log_path})"
            )
        time.sleep(0.1)
    started = process_start_time(proc.pid)
    record = ServiceRecord(
        name=sd.name,
        kind=spec.kind,
        pid=proc.pid,
        pid_started=started if started is not None else time.time(),
        url=spec.url,
        port=spec.port,
        started_at=now_iso(),
        owner_pid=os.getpid(),
        owner_command=command,
        idle_timeout_s=spec.idle_timeout_s,
        log_path=str(sd.log_path),
        ui_url=spec.ui_url,
        data_dir=spec.data_dir,
        config_hash=spec.config_hash,
    )
    sd.write_record(record)
    # The host outlives this client: nobody here waits for it, and Popen must not warn about that.
    proc.returncode = 0
    return record


def _log_tail(sd: ServiceDir, n_chars: int = 3000) -> str:
    try:
        return sd.log_path.read_text(encoding="utf-8", errors="replace")[-n_chars:]
    except OSError:
        return ""


def release(sd: ServiceDir, acquired: Acquired, *, stop_when_unused: bool) -> None:
    """Drop this client's lease; with ``stop_when_unused`` the last client out stops the service."""
    sd.drop_lease(acquired.lease)
    if not stop_when_unused:
        return
    with sd.locked(LOCK_WAIT_S, "stopped"):
        record = sd.read_record()
        if record is None or record.pid != acquired.record.pid or sd.leases():
            return
        stop_locked(sd)


@dataclass(frozen=True)
class Stopped:
    """What ``stop`` did to one service."""

    name: str
    kind: Kind
    pid: int
    graceful: bool
    leases: int


def stop(sd: ServiceDir, timeout_s: float = STOP_TIMEOUT_S) -> Stopped | None:
    """Stop the service gracefully (SIGTERM, then SIGKILL after ``timeout_s``); None when none runs."""
    with sd.locked(LOCK_WAIT_S, "stopped"):
        return stop_locked(sd, timeout_s)


def stop_locked(sd: ServiceDir, timeout_s: float = STOP_TIMEOUT_S) -> Stopped | None:
    """``stop`` for a caller that already holds the service's lock."""
    record = sd.live_record()
    if record is None:
        return None
    leases = len(sd.leases())
    graceful = _terminate(record.pid, timeout_s)
    sd.remove_record(record.pid)
    return Stopped(sd.name, record.kind, record.pid, graceful, leases)


def _terminate(pid: int, timeout_s: float) -> bool:
    """SIGTERM, wait, SIGKILL; True when it exited on the SIGTERM."""
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return True
    if _exited(pid, timeout_s):
        return True
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.kill()
    _exited(pid, 5.0)
    return False


def _exited(pid: int, timeout_s: float) -> bool:
    # A zombie has exited: only its parent can reap it (the command that started the service, still running:
    # a test, a long run), and waiting for it to vanish would wait for that parent.
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped here when this process started it
        if not process_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


@contextlib.contextmanager
def leased(
    sd: ServiceDir,
    command: str,
    spec_for: Callable[[], Spec],
    health_url_of: Callable[[ServiceRecord], str],
    *,
    start_timeout_s: float,
    stop_when_unused: bool,
    config_hash: str = "",
) -> Iterator[Acquired]:
    """``acquire`` for the duration of a block, then ``release``."""
    acquired = acquire(sd, command, spec_for, health_url_of, start_timeout_s, config_hash)
    try:
        yield acquired
    finally:
        release(sd, acquired, stop_when_unused=stop_when_unused)


@dataclass(frozen=True)
class ServiceStatus:
    """A running service as ``ftpipe services status`` shows it."""

    record: ServiceRecord
    leases: list[Lease]
    idle_since: float | None  # epoch seconds; None while in use
    stops_at: float | None  # epoch seconds the watchdog will stop it, when idle
    rss_bytes: int | None


def statuses(root: Path) -> list[ServiceStatus]:
    """Every running service under ``root``; records of dead processes are cleaned on the way."""
    found: list[ServiceStatus] = []
    for sd in service_dirs(root):
        record = sd.live_record()
        if record is None:
            continue
        leases = sd.leases()
        idle_since = None if leases else (sd.idle_since() or record.pid_started)
        stops_at = None if idle_since is None else idle_since + record.idle_timeout_s
        try:
            rss: int | None = int(psutil.Process(record.pid).memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            rss = None
        found.append(ServiceStatus(record, leases, idle_since, stops_at, rss))
    return found


def stop_services(root: Path, kinds: set[str], timeout_s: float = STOP_TIMEOUT_S) -> list[Stopped]:
    """Stop every running service of the given kinds (``prefect``, ``backend``)."""
    done: list[Stopped] = []
    for sd in service_dirs(root):
        record = sd.read_record()
        if record is None or record.kind not in kinds:
            continue
        result = stop(sd, timeout_s)
        if result is not None:
            done.append(result)
    if "runner" in kinds:
        from services.runner_host import stop_starting

        starting = stop_starting(root, timeout_s)
        if starting is not None:
            done.append(Stopped(RUNNER_SERVICE, "runner", starting[0], starting[1], 0))
    return done
