"""The start-up probe of ``ftpipe run`` (issue 16 item 7): transient answers are retried under the client's
policy, so a run is not lost before it starts (a refused address is still reported within seconds:
test_cli_errors.py::test_closed_port_names_the_url_within_5_s)."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.main import main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "customer-support"


_reached: list[bool] = []


@pytest.fixture(autouse=True)
def stub_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flow is replaced by a marker: reaching it means the start-up probe passed."""

    def fine_tune(**_: object) -> None:
        _reached.append(True)
        raise SystemExit(0)

    monkeypatch.setitem(sys.modules, "flows.fine_tune", types.SimpleNamespace(fine_tune=fine_tune))
    for name in ("MKA1_BASE_URL", "MKA1_API_KEY", "MKA1_MAX_RETRIES", "FTPIPE_DEBUG"):
        monkeypatch.delenv(name, raising=False)


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers GET /models/{id} from ``script`` in order (the last entry repeats): a status, or 'drop'."""

    script: list[str] = ["200"]
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).seen.append(self.path)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if step == "drop":  # connection reset, no answer (the fault middleware's 'drop')
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            self.close_connection = True
            self.connection.close()
            return
        status = int(step)
        body = b'{"id": "m", "object": "model"}' if status == 200 else b'{"error": {"message": "injected"}}'
        self.send_response(status)
        if status in (429, 503):
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[_Scripted]]]:
    handler = type("Handler", (_Scripted,), {"script": ["200"], "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", handler
    httpd.shutdown()
    httpd.server_close()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[bool, int, list[str]]:
    """(flow reached, exit code, output lines) of ``ftpipe run ARGV``."""
    _reached.clear()
    try:
        code = main(["run", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    reached = bool(_reached)
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.strip()]
    assert not any("Traceback" in line for line in lines), lines
    return reached, code, lines


def test_five_faulted_answers_in_a_row_do_not_fail_the_run_before_it_starts(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scripted: tuple[str, type[_Scripted]],
) -> None:
    url, handler = scripted
    handler.script = ["503", "drop", "429", "502", "500", "200"]
    monkeypatch.setenv("MKA1_BASE_URL", url)
    monkeypatch.setenv("MKA1_API_KEY", "k")
    monkeypatch.setenv("MKA1_MAX_RETRIES", "5")
    reached, _, lines = _run(capsys, str(SAMPLE))
    assert reached, lines
    assert handler.seen == ["/v1/models/local:tiny-chat"] * 6


def test_transient_answers_that_outlast_the_retries_name_the_status(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scripted: tuple[str, type[_Scripted]],
) -> None:
    url, handler = scripted
    handler.script = ["503"]
    monkeypatch.setenv("MKA1_BASE_URL", url)
    monkeypatch.setenv("MKA1_MAX_RETRIES", "2")
    reached, code, lines = _run(capsys, str(SAMPLE))
    assert not reached and code == 1
    assert lines == [f"ftpipe run: the API at {url} answered 503; check MKA1_BASE_URL (or --base-url)"]
    assert len(handler.seen) == 3  # the first try and MKA1_MAX_RETRIES retries
