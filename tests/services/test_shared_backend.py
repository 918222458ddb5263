"""The embedded backend shared by concurrent runs (real backend, real HTTP): leases, idle-out, services CLI."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from cli.main import main as ftpipe
from client import MKA1Client
from flows.backend_runtime import open_connection
from tests.services.conftest import ServicesEnv, start_client, wait_gone

pytestmark = pytest.mark.integration


def _backend_pid(se: ServicesEnv) -> int:
    from services.manager import statuses

    (status,) = [s for s in statuses(se.root) if s.record.kind == "backend"]
    return status.record.pid


def test_run_b_keeps_the_backend_when_run_a_ends(
    services_env: ServicesEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The strict lifetime (the last client out stops it): A started it, B joined, A leaves first.
    monkeypatch.setenv("FTPIPE_SERVICES_KEEP", "false")
    run_a, url_a = start_client(services_env)
    pid = _backend_pid(services_env)
    with open_connection() as conn, MKA1Client(conn.settings) as client:
        assert conn.settings.base_url == url_a
        assert run_a.communicate("done\n", timeout=60)[0].strip() == "released"
        assert run_a.returncode == 0
        # B still talks to the same backend over HTTP after A's end.
        assert list(client.files.list()) == []
        assert _backend_pid(services_env) == pid
    assert wait_gone(pid, 45), "the last client out did not stop the backend"


def test_a_killed_clients_lease_does_not_keep_the_backend(
    services_env: ServicesEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTPIPE_SERVICES_KEEP", "true")
    monkeypatch.setenv("FTPIPE_SERVICES_IDLE_TIMEOUT_S", "1")
    client, _ = start_client(services_env)
    pid = _backend_pid(services_env)
    client.send_signal(signal.SIGKILL)
    client.wait(10)
    assert wait_gone(pid, 45), "a dead client's lease kept the backend alive"


def test_a_terminal_ctrl_c_does_not_reach_the_backend(
    services_env: ServicesEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A terminal's Ctrl-C is SIGINT to the foreground process group: the client's group here.
    monkeypatch.setenv("FTPIPE_SERVICES_KEEP", "true")
    client, url = start_client(services_env, start_new_session=True)
    pid = _backend_pid(services_env)
    os.killpg(client.pid, signal.SIGINT)
    client.wait(30)
    with open_connection() as conn, MKA1Client(conn.settings) as api:
        assert conn.settings.base_url == url
        assert list(api.files.list()) == []
    assert _backend_pid(services_env) == pid


def test_services_status_lists_clients_and_stop_stops_gracefully(
    services_env: ServicesEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FTPIPE_SERVICES_KEEP", "true")
    monkeypatch.setenv("FTPIPE_SERVICES_IDLE_TIMEOUT_S", "600")
    with open_connection() as conn:
        assert ftpipe(["services", "status", "--json"]) == 0
        (listed,) = json.loads(capsys.readouterr().out)
        assert listed["kind"] == "backend"
        assert listed["url"] == conn.settings.base_url
        assert [lease["pid"] for lease in listed["leases"]] == [os.getpid()]
        assert listed["stops_at"] is None
    # The run ended: the backend stays for the next command, idle, with its idle-out time.
    assert ftpipe(["services", "status", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["leases"] == []
    assert listed["stops_at"] == pytest.approx(listed["idle_since"] + 600)
    assert ftpipe(["services", "status"]) == 0
    table = capsys.readouterr().out
    assert str(listed["pid"]) in table and "stops in" in table

    assert ftpipe(["services", "stop", "backend"]) == 0
    out = capsys.readouterr().out
    assert f"(pid {listed['pid']}) stopped" in out
    assert wait_gone(listed["pid"], 5)
    assert ftpipe(["services", "status"]) == 0
    assert "no ftpipe services running" in capsys.readouterr().out
    assert ftpipe(["services", "stop"]) == 0
    assert "no ftpipe service was running" in capsys.readouterr().out


def test_services_help_has_an_example_for_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, examples in (
        (["services", "stop", "--help"], ("e.g. ftpipe services stop prefect", "e.g. --timeout 90")),
        (["services", "status", "--help"], ("e.g. ftpipe services status --json",)),
        (["services", "--help"], ("ftpipe services stop backend", "FTPIPE_SERVICES_KEEP=false")),
    ):
        with pytest.raises(SystemExit) as exit_info:
            ftpipe(argv)
        assert exit_info.value.code == 0
        out = " ".join(capsys.readouterr().out.split())  # argparse wraps long help lines
        for example in examples:
            assert example in out, (argv, example)


def test_services_stop_pauses_a_training_job_at_a_checkpoint(
    services_env: ServicesEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import httpx

    from tests.jsonl_data import chat_example, write_jsonl

    monkeypatch.setenv("FTPIPE_SERVICES_KEEP", "true")
    train = write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(12)])

    def api(conn_url: str, key: str) -> httpx.Client:
        return httpx.Client(base_url=conn_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    with open_connection() as conn:
        key = conn.settings.api_key.get_secret_value() if conn.settings.api_key else ""
        with api(conn.settings.base_url, key) as c:
            file_id = c.post(
                "/files", files={"file": (train.name, train.read_bytes())}, data={"purpose": "fine-tune"}
            ).json()["id"]
            body = {
                "model": "local:micro-chat",
                "training_file": file_id,
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 50}}},
            }
            job_id = c.post("/fine_tuning/jobs", json=body).json()["id"]
            deadline = time.monotonic() + 180
            while c.get(f"/fine_tuning/jobs/{job_id}").json()["status"] != "running":
                assert time.monotonic() < deadline, "the job never started"
                time.sleep(0.2)
    assert ftpipe(["services", "stop", "backend"]) == 0
    with open_connection() as conn, api(conn.settings.base_url, key) as c:
        events = c.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
        messages = [e["message"] for e in events]
        assert any(m.startswith("Backend shutting down: checkpoint saved") for m in messages), messages
        assert c.get(f"/fine_tuning/jobs/{job_id}").json()["status"] in ("queued", "running", "succeeded")
        c.post(f"/fine_tuning/jobs/{job_id}/cancel")


# A client that only needs the API (`ftpipe jobs`, `ftpipe chat`, a run's preflight) must not pay for the
# server's web stack: it prints the web modules it imported while leasing the backend.
WEB_MODULES_OF_A_CLIENT = """
import sys
from flows.backend_runtime import open_connection
with open_connection() as conn:
    web = sorted(m for m in sys.modules if m.split(".")[0] in ("fastapi", "starlette", "uvicorn"))
    print(conn.settings.base_url, ",".join(web) or "-", flush=True)
"""


def test_open_connection_imports_no_web_framework(services_env: ServicesEnv) -> None:
    # The first client starts the backend, the second leases the running one: neither imports FastAPI.
    for _ in range(2):
        proc, line = start_client(services_env, WEB_MODULES_OF_A_CLIENT)
        assert proc.wait(60) == 0
        url, web = line.split()
        assert url.startswith("http://127.0.0.1:")
        assert web == "-", f"open_connection imported {web}"
