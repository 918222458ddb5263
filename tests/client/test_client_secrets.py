"""The API key must never surface in reprs, dumps, exception text or httpx/httpcore DEBUG logs."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from client_testkit import SECRET, FakeAPI, Runner, json_response

from client import AsyncMKA1Client, ClientSettings, MKA1Client
from client.errors import APIConnectionError, AuthenticationError
from client.redaction import redact


class EchoHandler(BaseHTTPRequestHandler):
    """Echoes the Authorization header back (as a misconfigured proxy might) in a header and a 401 body."""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        auth = self.headers.get("Authorization", "")
        if self.path.endswith("/files/deny"):
            body = json.dumps(
                {"error": {"message": f"invalid key: {auth}", "type": "auth", "code": "invalid_api_key"}}
            ).encode()
            status = 401
        else:
            body = json.dumps({"id": "file-1", "object": "file", "bytes": 1, "note": f"seen {auth}"}).encode()
            status = 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Echo-Authorization", auth)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        return


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/llm"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def assert_no_secret(text: str, where: str) -> None:
    assert SECRET not in text, f"API key leaked in {where}: {text[:300]!r}"


def test_settings_never_reveal_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKA1_API_KEY", SECRET)
    monkeypatch.setenv("MKA1_ON_BEHALF_OF", "user-9")
    monkeypatch.setenv("MKA1_TIMEOUT_S", "12.5")
    settings = ClientSettings()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == SECRET  # it did load
    assert settings.on_behalf_of == "user-9" and settings.timeout_s == 12.5
    assert settings.base_url == "https://apigw.mka1.com/api/v1/llm"
    for where, text in {
        "repr": repr(settings),
        "str": str(settings),
        "model_dump_json": settings.model_dump_json(),
        "model_dump": repr(settings.model_dump()),
        "model_dump(json)": json.dumps(settings.model_dump(mode="json")),
    }.items():
        assert_no_secret(text, where)


def test_empty_key_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKA1_API_KEY", "  ")
    assert ClientSettings().api_key is None
    with pytest.raises(ValueError):
        ClientSettings(base_url="ftp://x")


def test_client_repr_hides_key(settings: ClientSettings) -> None:
    with MKA1Client(settings, transport=httpx.MockTransport(FakeAPI())) as c:
        assert_no_secret(repr(c), "repr(MKA1Client)")
        assert "api.test" in repr(c)
    async_client = AsyncMKA1Client(settings, transport=httpx.MockTransport(FakeAPI()))
    assert_no_secret(repr(async_client), "repr(AsyncMKA1Client)")
    asyncio.run(async_client.aclose())


def test_401_echoing_key_is_redacted(runner: Runner, api: FakeAPI) -> None:
    api.routes[("GET", "files/f1")] = json_response(
        {
            "error": {
                "message": f"Incorrect API key provided: {SECRET}",
                "code": "invalid_api_key",
                "param": None,
            }
        },
        401,
    )
    with pytest.raises(AuthenticationError) as info:
        runner.call(api, lambda c: c.files.retrieve("f1"))
    exc = info.value
    assert "Incorrect API key provided" in str(exc)  # the useful part survives
    for where, text in {
        "str": str(exc),
        "repr": repr(exc),
        "message": exc.message,
        "body": json.dumps(exc.body),
        "args": repr(exc.args),
    }.items():
        assert_no_secret(text, f"exception {where}")


def test_redact_handles_bearer_forms() -> None:
    assert redact("Authorization: Bearer abc.def-ghi") == "Authorization: Bearer [REDACTED]"
    assert redact("(b'Authorization', b'Bearer tok123')") == "(b'Authorization', b'Bearer [REDACTED]')"
    assert redact("nothing to hide") == "nothing to hide"


def test_debug_logs_over_real_socket_do_not_leak(echo_server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="httpx")
    caplog.set_level(logging.DEBUG, logger="httpcore")
    settings = ClientSettings(base_url=echo_server, api_key=SECRET)
    with MKA1Client(settings) as c:
        got = c.files.retrieve("file-1")
        with pytest.raises(AuthenticationError) as info:
            c.files.retrieve("deny")
    assert got.id == "file-1"
    assert_no_secret(str(info.value), "401 exception")

    messages = [r.getMessage() for r in caplog.records]
    # Prove the test is meaningful: httpcore really logged the echoed header at DEBUG, and it was scrubbed.
    header_lines = [m for m in messages if "receive_response_headers.complete" in m]
    assert header_lines, "httpcore did not log response headers; test would be vacuous"
    assert all("X-Echo-Authorization" in m and "[REDACTED]" in m for m in header_lines)
    assert any(m.startswith("send_request_headers.started") for m in messages)
    assert any("HTTP Request: GET" in m for m in messages)
    for m in messages:
        assert_no_secret(m, "log record")
    assert_no_secret(caplog.text, "formatted log")
    for r in caplog.records:
        assert_no_secret(repr(r.args), "log record args")


def test_async_debug_logs_over_real_socket_do_not_leak(
    echo_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="httpx")
    caplog.set_level(logging.DEBUG, logger="httpcore")

    async def main() -> str:
        async with AsyncMKA1Client(ClientSettings(base_url=echo_server, api_key=SECRET)) as c:
            return (await c.files.retrieve("file-1")).id

    assert asyncio.run(main()) == "file-1"
    assert any("receive_response_headers.complete" in r.getMessage() for r in caplog.records)
    assert_no_secret(caplog.text, "async formatted log")


def test_connection_error_text_has_no_key() -> None:
    settings = ClientSettings(base_url="http://127.0.0.1:1/api/v1/llm", api_key=SECRET, connect_timeout_s=2)
    with MKA1Client(settings) as c, pytest.raises(APIConnectionError) as info:
        c.files.retrieve("f1")
    assert_no_secret(str(info.value), "connection error")
