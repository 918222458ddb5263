"""Issue 16 item 7: the embedded backend's port held by a backend refusing our key, or by another program.

Before: a phantom second backend was started; its bind failed, and its health wait was satisfied by the old
server. Now ``ftpipe run`` says which it is (exit 1, one line, nothing started), and the launcher's health
wait only accepts its own process's answer. Driven against a real backend over real HTTP.
"""

from __future__ import annotations

import http.server
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from cli.main import main
from cli.preflight import PreflightError, check_local_port
from client import ClientSettings
from flows.backend_runtime import Connection, LocalPortTaken, open_connection, use_connection

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "customer-support"
KEY_A = "ftpipe-test-key-of-the-running-backend"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """Backend A: its own data dir and key, on a port the tests then configure for a second run."""
    settings = BackendSettings(data_dir=tmp_path_factory.mktemp("backend-a"), api_key=SecretStr(KEY_A))
    with start_backend(settings, port=0) as rb:
        yield rb


@pytest.fixture
def run_b_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A second run's embedded-backend settings (its own data dir); the flow is a marker that must not run."""
    for name in ("MKA1_BASE_URL", "MKA1_API_KEY", "FTPIPE_DEBUG", "FTPIPE_BACKEND_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    data_b = tmp_path / "backend-b"
    monkeypatch.setenv("FTPIPE_BACKEND_DATA_DIR", str(data_b))

    def fine_tune(**_: object) -> None:
        raise AssertionError("the flow started although the backend port is unusable")

    monkeypatch.setitem(sys.modules, "flows.fine_tune", types.SimpleNamespace(fine_tune=fine_tune))
    return data_b


def _ftpipe_run(capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["run", str(SAMPLE)])
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.strip()]
    assert not any("Traceback" in line for line in lines), lines
    return code, lines


def test_a_backend_refusing_the_configured_key_is_named_and_nothing_starts(
    running: RunningBackend,
    run_b_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FTPIPE_BACKEND_PORT", str(running.port))
    monkeypatch.setenv("FTPIPE_BACKEND_API_KEY", "another-key")
    code, lines = _ftpipe_run(capsys)
    assert code == 1
    assert lines == [
        f"ftpipe run: port {running.port} is used by an ftpipe backend that refuses FTPIPE_BACKEND_API_KEY; "
        "set the same key as that backend (FTPIPE_BACKEND_API_KEY) or another port: FTPIPE_BACKEND_PORT"
    ]
    assert "another-key" not in "\n".join(lines)
    # The flow's own connection (runs started elsewhere, e.g. deployments) refuses the same way, before starting.
    with pytest.raises(LocalPortTaken, match="refuses FTPIPE_BACKEND_API_KEY"), open_connection():
        pass
    assert not (run_b_env / "logs").exists()  # no second backend was launched on run B's data dir


def test_a_generated_key_that_is_refused_names_its_file(
    running: RunningBackend, run_b_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTPIPE_BACKEND_PORT", str(running.port))
    with pytest.raises(LocalPortTaken) as err, open_connection():
        pass
    assert str(err.value) == (
        f"port {running.port} is used by an ftpipe backend that refuses this run's key "
        f"({run_b_env / 'api_key'}; FTPIPE_BACKEND_API_KEY is unset); set the same key as that backend "
        "(FTPIPE_BACKEND_API_KEY) or another port: FTPIPE_BACKEND_PORT"
    )


def test_the_same_key_reuses_the_running_backend(
    running: RunningBackend, run_b_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTPIPE_BACKEND_PORT", str(running.port))
    monkeypatch.setenv("FTPIPE_BACKEND_API_KEY", KEY_A)
    with open_connection() as conn:
        assert conn.settings.base_url == running.base_url and conn.embedded
    assert not (run_b_env / "logs").exists()


class _NotABackend(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_another_program_on_the_port_is_named(
    run_b_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotABackend)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    try:
        monkeypatch.setenv("FTPIPE_BACKEND_PORT", str(port))
        code, lines = _ftpipe_run(capsys)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(
        f"ftpipe run: port {port} on 127.0.0.1 is used by a program that is not an ftpipe backend"
    )
    assert lines[0].endswith("stop it or use another port: FTPIPE_BACKEND_PORT")
    assert not (run_b_env / "logs").exists()


def test_a_run_on_an_overridden_connection_does_not_check_the_local_port(
    run_b_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotABackend)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("FTPIPE_BACKEND_PORT", str(httpd.server_address[1]))
        with pytest.raises(PreflightError):
            check_local_port()
        fake = Connection(ClientSettings(base_url="http://fake.invalid/v1"), "fake", embedded=False)
        with use_connection(fake):
            check_local_port()  # the run goes to ``fake``: whatever holds the local port is not its business
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_launchers_health_wait_is_not_answered_by_another_server(
    running: RunningBackend, tmp_path: Path
) -> None:
    """Started on a taken port anyway, the new server cannot bind: the launcher reports that, instead of
    returning a handle whose health check the old server answered."""
    phantom = RunningBackend(
        BackendSettings(data_dir=tmp_path / "phantom", api_key=SecretStr("k")), running.port
    )
    with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{running.port}"):
        phantom.start()
    assert phantom.pid is None
