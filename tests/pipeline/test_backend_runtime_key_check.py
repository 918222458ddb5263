"""The embedded-backend reuse check: transient failures are retried, a wrong key is a clean False."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from flows.backend_runtime import _key_accepted


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
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

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
