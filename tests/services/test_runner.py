"""A real warm runner serving real ``ftpipe run`` commands (a real embedded backend and Prefect API).

One runner for the module (each start imports Prefect: seconds of CPU); the last test stops it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.settings import get_current_settings

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from services.manager import stop_services
from services.registry import RUNNER_SERVICE, ServiceDir, ServiceRecord
from services.runner import RunnerClient, code_root, runner_key
from services.runner_host import start_runner, wait_ready
from tests.services.conftest import wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "customer-support"


@dataclass(frozen=True)
class Served:
    env: dict[str, str]
    cwd: Path
    root: Path
    record: ServiceRecord

    def log(self) -> str:
        return Path(self.record.log_path).read_text(encoding="utf-8")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", "run", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    with start_backend(BackendSettings(data_dir=tmp_path_factory.mktemp("runner-data"), port=0)) as rb:
        yield rb


@pytest.fixture(scope="module")
def served(backend: RunningBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("runner")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MKA1_", "FTPIPE_", "PREFECT_API_URL"))}
    env.update(
        FTPIPE_STATE_DIR=str(tmp / "state"),
        FTPIPE_SERVICES_DIR=str(tmp / "services"),
        FTPIPE_SERVICES_KEEP="true",
        FTPIPE_SERVICES_RUNNER="true",
        FTPIPE_TRACKING_ENABLED="false",
        FTPIPE_BACKEND_DATA_DIR=str(backend.data_dir),
        FTPIPE_BACKEND_PORT=str(backend.port),
        PREFECT_API_URL=str(get_current_settings().api.url),
        PYTHONPATH=str(REPO),
    )
    cwd = tmp / "work"
    cwd.mkdir()
    root = tmp / "services"
    pid = start_runner(env, str(cwd), runner_key(env, str(cwd), code_root()), "pytest", 600.0)
    assert pid is not None
    record = wait_ready(root, pid, 180.0)
    assert record is not None, (root / RUNNER_SERVICE / "server.log").read_text()
    try:
        yield Served(env, cwd, root, record)
    finally:
        stop_services(root, {"prefect", "backend", "runner"}, timeout_s=30)


def _dataset(d: Path, *, bad: bool = False) -> Path:
    d.mkdir()
    for name, n in (("train.jsonl", 40), ("validation.jsonl", 10)):
        lines = (SAMPLE / name).read_text(encoding="utf-8").splitlines()[:n]
        if bad and name == "train.jsonl":
            lines[3] = '{"messages": [{"role": "user"}]}'
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def _served_pids(log: str) -> list[int]:
    return [
        int(line.split("pid ")[1].split(":")[0]) for line in log.splitlines() if ": ftpipe run (in " in line
    ]


def test_a_run_is_served_by_the_runner_with_its_output_and_exit_code(served: Served, tmp_path: Path) -> None:
    before = _served_pids(served.log())
    data = _dataset(tmp_path / "ds")
    proc = served.run(
        str(data), "--model", "local:micro-chat", "--epochs", "1", "--no-eval", "--progress", "plain"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "fine-tuned model" in proc.stdout and "the job:  ftpipe jobs show ftjob_" in proc.stdout, (
        proc.stdout
    )
    assert f"output dir                      {served.cwd / 'runs'}" in proc.stdout  # relative to its own cwd
    assert "Beginning flow run" in proc.stderr  # Prefect's console handler writes to the command's stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    # Served: the runner forked a child for it (a new line in its log), and it left no lease behind.
    after = _served_pids(served.log())
    assert len(after) == len(before) + 1
    assert wait_gone(after[-1], 10)


def test_a_bad_dataset_through_the_runner_prints_what_the_command_itself_prints(
    served: Served, tmp_path: Path
) -> None:
    before = len(_served_pids(served.log()))
    data = _dataset(tmp_path / "bad", bad=True)
    argv = (str(data), "--model", "local:micro-chat", "--progress", "plain")
    proc = served.run(*argv)
    assert len(_served_pids(served.log())) == before + 1
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dataset invalid; nothing was uploaded:" in proc.stderr
    assert f"{data / 'train.jsonl'}:4: messages.0.content:" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    # The same command in its own process: the same lines on the same streams (log times and ids aside).
    alone = subprocess.run(
        [sys.executable, "-m", "cli", "run", *argv],
        env={**served.env, "FTPIPE_SERVICES_RUNNER": "false"},
        cwd=served.cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert len(_served_pids(served.log())) == before + 1
    assert alone.returncode == 1
    assert _comparable(alone.stdout) == _comparable(proc.stdout)
    assert _comparable(alone.stderr) == _comparable(proc.stderr)


def _comparable(text: str) -> list[str]:
    # Log lines start with their time; flow run names and URLs carry ids.
    return [
        re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|'[a-z]+-[a-z]+'|\d\d:\d\d:\d\d\.\d{3}", "#", ln)
        for ln in text.splitlines()
    ]


def test_usage_errors_and_help_come_back_through_the_client(
    served: Served, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(served.cwd)
    for name in [n for n in os.environ if n.startswith(("FTPIPE_", "MKA1_", "PREFECT_API_URL"))]:
        monkeypatch.delenv(name)
    for name, value in served.env.items():
        monkeypatch.setenv(name, value)
    client = RunnerClient.for_command(["ftpipe", "run", "--help"])
    assert client is not None
    assert client.serve() == 0, client.missed
    assert "usage: ftpipe run" in capfd.readouterr().out

    client = RunnerClient.for_command(["ftpipe", "run", "--epochs", "0", "DIR"])
    assert client is not None
    assert client.serve() == 2
    err = capfd.readouterr().err
    assert err.startswith("ftpipe run: error: argument --epochs") and "Traceback" not in err

    # Another Prefect setting: not served by this runner (the command runs in its own process).
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "DEBUG")
    other = RunnerClient.for_command(["ftpipe", "run", "--help"])
    assert other is not None and other.serve() is None and other.missed == "mismatch"


def test_status_lists_the_runner_and_stop_stops_it(served: Served) -> None:
    env = served.env
    status = subprocess.run(
        [sys.executable, "-m", "cli", "services", "status"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "runner" in status.stdout and str(served.record.pid) in status.stdout, status.stdout
    stop = subprocess.run(
        [sys.executable, "-m", "cli", "services", "stop", "runner"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"runner (pid {served.record.pid}) stopped" in stop.stdout, stop.stdout
    assert wait_gone(served.record.pid, 10)
    sd = ServiceDir(served.root, RUNNER_SERVICE)
    assert sd.read_record() is None and not (sd.path / "runner.sock").exists()
    # The next command runs in its own process and starts a runner again in the background.
    started = time.monotonic()
    proc = served.run(str(served.cwd / "missing"))
    assert proc.returncode == 2 and "no such dataset folder" in proc.stderr, proc.stderr
    assert time.monotonic() - started < 60
    deadline = time.monotonic() + 120
    while sd.live_record() is None:
        assert time.monotonic() < deadline, sd.log_path.read_text()
        time.sleep(0.2)
