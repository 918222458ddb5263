"""The embedded-backend reuse check: transient failures (of the key check and of /health) are retried, a wrong
key is a clean False."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr

from backend.settings import BackendSettings
from flows.backend_runtime import _key_accepted, reusable_local_backend


def _answer(handler: BaseHTTPRequestHandler, status: int, body: dict[str, object]) -> None:
    raw = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


class _Handler(BaseHTTPRequestHandler):
    # Statuses to answer GET /files with, in order; the last one repeats.
    script: list[int] = [200]
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        _Handler.seen.append(self.path)
        status = _Handler.script.pop(0) if len(_Handler.script) > 1 else _Handler.script[0]
        body = (
            {"object": "list", "data": [], "has_more": False}
            if status == 200
            else {"error": {"message": "nope", "type": "x", "param": None, "code": None}}
        )
        _answer(self, status, body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/api/v1/llm"
    httpd.shutdown()
    httpd.server_close()


def test_a_transient_503_is_retried_instead_of_starting_a_second_backend(server: str) -> None:
    _Handler.script = [503, 200]
    assert _key_accepted(server, SecretStr("k")) is True
    assert len(_Handler.seen) == 2


def test_a_rejected_key_reads_as_false(server: str) -> None:
    _Handler.script = [401]
    assert _key_accepted(server, SecretStr("k")) is False
    assert len(_Handler.seen) == 1


class _FlakyHealth(BaseHTTPRequestHandler):
    # /health: the first `drops` requests lose their connection; then an ftpipe backend's answer.
    drops = 2
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        _FlakyHealth.seen.append(self.path)
        if self.path.endswith("/health") and _FlakyHealth.drops > 0:
            _FlakyHealth.drops -= 1
            self.close_connection = True
            self.connection.close()
            return
        if self.path.endswith("/health"):
            body: dict[str, object] = {"status": "ok", "service": "ftpipe-backend", "pid": 4242}
        else:
            body = {"object": "list", "data": [], "has_more": False}
        _answer(self, 200, body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_backend_whose_health_answer_is_lost_twice_is_still_reused(tmp_path: Path) -> None:
    """The embedded start-up probe rides out transient failures instead of starting a second backend."""
    _FlakyHealth.drops, _FlakyHealth.seen = 2, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHealth)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        bs = BackendSettings(port=httpd.server_address[1], data_dir=tmp_path, api_key=SecretStr("k"))
        assert reusable_local_backend(bs) is True
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert [p.rsplit("/", 1)[-1] for p in _FlakyHealth.seen[:3]] == ["health"] * 3
