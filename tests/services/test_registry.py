"""Service state on disk: leases of dead (or recycled) pids read as gone, files are private and atomic."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from services.manager import statuses
from services.registry import ServiceDir, ServiceRecord, now_iso, process_start_time


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _record(sd: ServiceDir, pid: int) -> ServiceRecord:
    return ServiceRecord(
        name=sd.name,
        kind="backend",
        pid=pid,
        pid_started=process_start_time(pid) or 0.0,
        url="http://127.0.0.1:1/api/v1/llm",
        port=1,
        started_at=now_iso(),
        owner_pid=os.getpid(),
        owner_command="test",
        idle_timeout_s=60.0,
        log_path=str(sd.log_path),
    )


def test_a_killed_clients_lease_reads_as_gone_and_is_removed(tmp_path: Path) -> None:
    sd = ServiceDir(tmp_path, "backend-x")
    proc = _sleeper()
    try:
        lease = sd.add_lease("ftpipe run", pid=proc.pid)
        assert [x.pid for x in sd.leases()] == [proc.pid]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert sd.leases() == []
        assert not lease.path.exists()
    finally:
        proc.kill()


def test_a_lease_whose_pid_was_reused_reads_as_gone(tmp_path: Path) -> None:
    # Same pid, another process start time: the pid was recycled by an unrelated process.
    sd = ServiceDir(tmp_path, "prefect")
    sd.add_lease("ftpipe run")
    path = next(sd.leases_path.glob("*.json"))
    data = json.loads(path.read_text())
    data["pid_started"] -= 3600
    path.write_text(json.dumps(data))
    assert sd.leases() == []


def test_state_files_are_private_and_replaced_atomically(tmp_path: Path) -> None:
    root = tmp_path / "services"
    sd = ServiceDir(root, "backend-x")
    os.close(sd.open_lock())
    sd.write_record(_record(sd, os.getpid()))
    sd.write_record(_record(sd, os.getpid()))
    sd.add_lease("ftpipe run")
    for folder in (root, sd.path, sd.leases_path):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for f in (sd.record_path, sd.lock_path, *sd.leases_path.iterdir()):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert sorted(p.name for p in sd.path.iterdir()) == ["leases", "lock", "record.json"]  # no temp files
    assert sd.live_record() == ServiceRecord(**json.loads(sd.record_path.read_text()))


def test_status_forgets_a_service_whose_process_died(tmp_path: Path) -> None:
    sd = ServiceDir(tmp_path, "backend-x")
    proc = _sleeper()
    sd.write_record(_record(sd, proc.pid))
    assert [s.record.pid for s in statuses(tmp_path)] == [proc.pid]
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 5
    while statuses(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert statuses(tmp_path) == []
    assert not sd.record_path.exists()
