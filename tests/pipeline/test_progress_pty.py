"""``ftpipe run`` in a pseudo-terminal against a real embedded backend: what the screen shows.

The reported bug was a spinner and Prefect's log lines sharing one line (``...running step 30/11417:09:31.236 |
INFO ...``). Here the whole command's terminal output is played into a terminal emulator (pyte): every log line
starts its own line, one live region is left at the bottom, and it reached the end of the smoke checks.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyte
import pytest
from prefect.settings import get_current_settings

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from services.manager import stop_services
from services.registry import RUNNER_SERVICE, ServiceDir
from services.runner import code_root, runner_key
from services.runner_host import start_runner, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "customer-support"
COLUMNS, ROWS = 120, 40
LOG_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3} \| (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\| ")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    with start_backend(BackendSettings(data_dir=tmp_path_factory.mktemp("pty-data"), port=0)) as rb:
        yield rb


def _run_in_pty(argv: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, bytes]:
    leader, follower = pty.openpty()
    # The terminal's size, as a real one reports it (rich reads it from the tty).
    import fcntl
    import struct
    import termios

    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    proc = subprocess.Popen(
        argv, stdin=follower, stdout=follower, stderr=follower, env=env, cwd=REPO, start_new_session=True
    )
    os.close(follower)
    out = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the command exited and closed its side
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail("ftpipe run did not finish in time:\n" + out.decode(errors="replace")[-3000:])
        return proc.wait(timeout=30), bytes(out)
    finally:
        os.close(leader)


@pytest.mark.parametrize("runner", [False, True], ids=["own-process", "warm-runner"])
def test_log_lines_and_the_live_region_on_a_real_terminal(
    backend: RunningBackend, tmp_path: Path, runner: bool
) -> None:
    data = tmp_path / "ds"
    data.mkdir()
    for name, n in (("train.jsonl", 40), ("validation.jsonl", 10), ("smoke.jsonl", 2)):
        lines = (SAMPLE / name).read_text(encoding="utf-8").splitlines()[:n]
        (data / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MKA1_", "FTPIPE_", "PREFECT_API_URL"))}
    env.update(
        FTPIPE_STATE_DIR=str(tmp_path / "state"),
        FTPIPE_TRACKING_ENABLED="false",
        FTPIPE_BACKEND_DATA_DIR=str(backend.data_dir),  # the running backend is reused
        FTPIPE_BACKEND_PORT=str(backend.port),
        PREFECT_API_URL=str(get_current_settings().api.url),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PYTHONPATH=str(REPO),
        FTPIPE_SERVICES_RUNNER="false",  # services are kept (FTPIPE_ is cleared): no runner left behind
        TERM="xterm-256color",
        COLUMNS=str(COLUMNS),
        LINES=str(ROWS),
    )
    argv = [sys.executable, "-m", "cli", "run", str(data), "--model", "local:micro-chat", "--epochs", "2"]
    argv += ["--no-eval", "--poll-interval", "0.5", "--output", str(tmp_path / "out")]
    if runner:  # served by a warm runner started (with a log file as its stdio) before the command
        root = tmp_path / "services"
        env.update(FTPIPE_SERVICES_DIR=str(root), FTPIPE_SERVICES_KEEP="true", FTPIPE_SERVICES_RUNNER="true")
        pid = start_runner(env, str(REPO), runner_key(env, str(REPO), code_root()), "pytest", 600.0)
        assert pid is not None and wait_ready(root, pid, 300) is not None
        try:
            code, raw = _run_in_pty(argv, env, timeout_s=600)
            log = ServiceDir(root, RUNNER_SERVICE).log_path.read_text()
            assert ": ftpipe run (in " in log, log
        finally:
            stop_services(root, {"runner"}, timeout_s=30)
    else:
        code, raw = _run_in_pty(argv, env, timeout_s=600)
    screen = pyte.HistoryScreen(COLUMNS, ROWS, history=20_000)
    pyte.ByteStream(screen).feed(raw)
    rows = ["".join(ch.data for ch in row.values()) for row in screen.history.top] + screen.display
    lines = [row.rstrip() for row in rows if row.strip()]
    text = "\n".join(lines)
    assert code == 0, text[-3000:]
    assert "Traceback" not in text
    # Every log line begins a line: nothing of the bar or of another line is glued before it.
    for line in lines:
        found = LOG_LINE.search(line)
        assert found is None or found.start() == 0, line
    assert sum(1 for line in lines if LOG_LINE.match(line)) >= 10  # Prefect's and the job's lines were shown
    # One live region is left, in its final state, under the last log line.
    bars = [i for i, line in enumerate(lines) if "━" in line]
    assert len(bars) == 1, "\n".join(lines[i] for i in bars)
    (bar,) = bars
    # It ends on the smoke answers, 100%, also when they all came before the judging (the warm-runner variant,
    # after the other one, re-attaches to its finished job on the shared backend and has every answer at once).
    assert lines[bar].startswith("✓ smoke") and "100%" in lines[bar] and "elapsed" in lines[bar], text
    assert re.search(r"train loss \d+\.\d{4}  valid loss \d+\.\d{4}", lines[bar + 1])
    assert max(i for i, line in enumerate(lines) if LOG_LINE.match(line)) < bar
    links = [line for line in lines if line.startswith("Prefect run: ")]
    assert len(links) == 1 and re.fullmatch(
        r"Prefect run: http://127\.0\.0\.1:\d+/runs/flow-run/[0-9a-f-]{36}", links[0]
    )
    assert "fine-tune result" in lines[bar + 2 :]
