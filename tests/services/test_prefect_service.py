"""The local Prefect server: reused across commands, listed and stoppable; never orphaned by a killed run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cli.main import main as ftpipe
from tests.jsonl_data import chat_example, write_jsonl
from tests.services.conftest import ServicesEnv, wait_gone

pytestmark = pytest.mark.integration

# Two commands' worth of flow runs in one process; each prints what it was given.
TWO_RUNS = """
import json
from prefect import flow
from services.prefect_api import prefect_api_for_run, prefect_ui_url, serving_pids

@flow
def hello() -> int:
    return 1

out = []
for _ in range(2):
    with prefect_api_for_run("test") as api:
        assert hello() == 1
        out.append(
            {
                "url": api.api_url,
                "ui": api.ui_url,
                "started": api.started,
                "ui_fn": prefect_ui_url(),
                "serving": serving_pids(),
            }
        )
print(json.dumps(out))
"""


def _run(se: ServicesEnv, code: str) -> list[dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-c", code], env=se.env(), capture_output=True, text=True, timeout=400, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_long_lived_server_is_reused_listed_and_stopped(
    services_env: ServicesEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FTPIPE_SERVICES_KEEP", "true")
    first, second = _run(services_env, TWO_RUNS)
    assert first["started"] is True and second["started"] is False
    assert first["url"] == second["url"] and str(first["url"]).startswith("http://127.0.0.1:")
    assert first["ui"] == first["ui_fn"] == str(first["url"]).removesuffix("/api")
    # Another command later reuses it too.
    (third, _) = _run(services_env, TWO_RUNS)
    assert third["url"] == first["url"] and third["started"] is False

    assert ftpipe(["services", "status", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["kind"], listed["url"], listed["ui_url"]) == ("prefect", first["url"], first["ui"])
    assert listed["leases"] == [] and listed["idle_timeout_s"] == 1800
    assert ftpipe(["services", "stop", "prefect"]) == 0
    assert "stopped" in capsys.readouterr().out
    assert first["serving"] == second["serving"] == third["serving"] == [listed["pid"]]
    assert wait_gone(listed["pid"], 5)


def _servers(proc: psutil.Process) -> dict[str, psutil.Process]:
    """The Prefect server and backend among ``proc``'s descendants, by what they run."""
    found: dict[str, psutil.Process] = {}
    for child in proc.children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "prefect.server.api.server" in cmd or "services.host prefect" in cmd:
            found["prefect"] = child
        elif "backend serve" in cmd or "services.host backend" in cmd:
            found["backend"] = child
    return found


def test_a_killed_ftpipe_run_leaves_no_server_behind(
    services_env: ServicesEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Today's per-run lifetime: the servers a run started must go with it, even on kill -9.
    monkeypatch.setenv("FTPIPE_SERVICES_KEEP", "false")
    data = tmp_path / "ds"
    write_jsonl(data / "train.jsonl", [chat_example(i) for i in range(12)])
    write_jsonl(data / "validation.jsonl", [chat_example(100 + i) for i in range(10)])
    argv = [sys.executable, "-m", "cli", "run", str(data), "--model", "local:micro-chat", "--epochs", "10"]
    argv += ["--no-eval", "--state-dir", str(tmp_path / "state"), "--output", str(tmp_path / "out")]
    run = subprocess.Popen(argv, env=services_env.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        parent = psutil.Process(run.pid)
        deadline = time.monotonic() + 300
        servers: dict[str, psutil.Process] = {}
        while len(servers) < 2 and time.monotonic() < deadline and run.poll() is None:
            servers = _servers(parent)
            time.sleep(0.5)
        assert set(servers) == {"prefect", "backend"}, f"run exited {run.poll()} before both servers started"
        left_behind = [servers["prefect"], servers["backend"], *servers["backend"].children(recursive=True)]
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        assert all(wait_gone(p.pid, 45) for p in left_behind), [
            " ".join(p.cmdline()) for p in left_behind if p.is_running()
        ]
    finally:
        if run.poll() is None:
            run.kill()


def test_the_prefect_server_never_takes_the_backend_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend's port is free while Prefect's server starts (the backend comes later in the run): the
    server's port is chosen around it, as a random free port could otherwise be that one."""
    import backend.launcher
    from services.prefect_api import server_port

    real = backend.launcher.free_port
    backend_port = real()
    offered = iter([backend_port, backend_port])
    monkeypatch.setattr(
        backend.launcher, "free_port", lambda host="127.0.0.1": next(offered, None) or real(host)
    )
    monkeypatch.setenv("FTPIPE_BACKEND_PORT", str(backend_port))
    port = server_port()
    assert port != backend_port and next(offered, None) is None  # both offers of the backend's port refused


def test_models_champion_reads_through_ftpipes_prefect_server(
    services_env: ServicesEnv, tmp_path: Path
) -> None:
    """Without PREFECT_API_URL the champion is read through ftpipe's per-run server (a free port chosen around
    the backend's), not a temporary server Prefect starts itself on a random port of 8000-9000."""
    from services.registry import PREFECT_SERVICE, ServiceDir

    env = {**services_env.env(), "FTPIPE_SERVICES_KEEP": "false", "PREFECT_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "models", "champion", "nobody"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no champion named 'nobody'" in proc.stdout
    assert "Starting temporary server" not in proc.stdout + proc.stderr
    assert (
        "started by ftpipe models champion"
        in ServiceDir(services_env.root, PREFECT_SERVICE).log_path.read_text()
    )
