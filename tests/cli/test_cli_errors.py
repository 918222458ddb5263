"""Issue 15's mistakes, driven through ``ftpipe run``: a few lines, no traceback, the right exit code, and
nothing started (no flow, so no upload) for those the preflight catches."""

from __future__ import annotations

import gzip
import http.server
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.errors import describe
from cli.main import main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "customer-support"


@pytest.fixture(autouse=True)
def no_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any mistake below reaching the flow (validate -> upload) fails the test."""

    def fine_tune(**_: object) -> None:
        raise AssertionError("the flow started: the mistake was not caught before upload")

    monkeypatch.setitem(sys.modules, "flows.fine_tune", types.SimpleNamespace(fine_tune=fine_tune))
    for name in ("MKA1_BASE_URL", "MKA1_API_KEY", "FTPIPE_DEBUG"):
        monkeypatch.delenv(name, raising=False)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    try:
        code = main(["run", *argv])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.strip()]
    assert not any("Traceback" in line for line in lines), lines
    return code, lines


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 401
    list_status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(self.list_status if self.path.endswith("/models") else self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": {"message": "no", "type": "invalid_request_error"}}')

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Answer]]]:
    handler = type("Handler", (_Answer,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", handler
    httpd.shutdown()
    httpd.server_close()


def test_dataset_folder_typo_is_one_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _run(capsys, str(SAMPLE) + "-typo")
    assert code == 2
    assert lines == [f"ftpipe run: {SAMPLE}-typo: no such dataset folder"]


def test_bad_option_is_one_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _run(capsys, str(SAMPLE), "--epochs", "0")
    assert code == 2
    assert len(lines) == 1 and "--epochs" in lines[0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"bad": 1}\nnot json\n', ":2: $: invalid JSON"),
        (b"", "file is empty"),
        (gzip.compress(b'{"messages": []}\n'), "gzip"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00,a,b\n", "ELF binary"),
    ],
)
def test_bad_dataset_shows_the_validate_report_before_upload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    train = tmp_path / "train.jsonl"
    train.write_bytes(content)
    code, lines = _run(capsys, "--train", str(train))
    assert code == 1
    assert lines[0] == "ftpipe run: dataset invalid; nothing was uploaded:"
    assert lines[1].startswith(f"{train}: INVALID")
    assert any(expected in line for line in lines), lines
    assert not any(":0:" in line for line in lines), lines  # whole-file problems name no line
    assert len(lines) <= 6


def test_directory_as_train_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _run(capsys, "--train", str(tmp_path))
    assert code == 2
    assert lines == [f"ftpipe run: --train {tmp_path}: is a folder, not a JSONL file"]


def test_closed_port_names_the_url_within_5_s(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MKA1_BASE_URL", f"http://127.0.0.1:{port}/v1")
    # Many retries allowed: a refused address is not a transient answer, it keeps its few quick tries.
    monkeypatch.setenv("MKA1_MAX_RETRIES", "10")
    start = time.monotonic()
    code, lines = _run(capsys, str(SAMPLE))
    assert time.monotonic() - start < 5
    assert code == 1
    assert len(lines) == 1
    assert f"http://127.0.0.1:{port}/v1" in lines[0] and "check MKA1_BASE_URL" in lines[0]


def test_refused_key_says_check_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], server: tuple[str, type[_Answer]]
) -> None:
    url, _ = server
    monkeypatch.setenv("MKA1_BASE_URL", url)
    monkeypatch.setenv("MKA1_API_KEY", "wrong")
    code, lines = _run(capsys, str(SAMPLE))
    assert code == 1
    assert lines == [f"ftpipe run: the API at {url} refused the key (401); check MKA1_API_KEY"]


def test_a_bad_dataset_is_reported_before_a_refused_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    server: tuple[str, type[_Answer]],
) -> None:
    # The API is probed while the dataset is validated; the dataset's report still comes first, alone.
    url, _ = server
    monkeypatch.setenv("MKA1_BASE_URL", url)
    monkeypatch.setenv("MKA1_API_KEY", "wrong")
    train = tmp_path / "train.jsonl"
    train.write_bytes(b'{"bad": 1}\nnot json\n')
    code, lines = _run(capsys, "--train", str(train))
    assert code == 1
    assert lines[0] == "ftpipe run: dataset invalid; nothing was uploaded:"
    assert not any("MKA1_API_KEY" in line for line in lines), lines


def test_unknown_model_is_named_before_upload(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], server: tuple[str, type[_Answer]]
) -> None:
    url, handler = server
    handler.status = 404
    monkeypatch.setenv("MKA1_BASE_URL", url)
    code, lines = _run(capsys, str(SAMPLE), "--model", "local:nano-chat")
    assert code == 1
    assert len(lines) == 1 and "unknown model 'local:nano-chat'" in lines[0] and url in lines[0]


def test_boundary_turns_api_errors_into_hints() -> None:
    from client.errors import APIConnectionError, AuthenticationError

    msg, code = describe(AuthenticationError("bad key", status_code=401))
    assert code == 1 and "check MKA1_API_KEY" in msg
    msg, code = describe(APIConnectionError("refused"))
    assert code == 1 and "check MKA1_BASE_URL" in msg
    assert describe(KeyboardInterrupt())[1] == 130
    msg, code = describe(FileNotFoundError(2, "No such file or directory", "x.jsonl"))
    assert (msg, code) == ("x.jsonl: no such file or directory", 2)


def test_console_handlers_print_no_traceback_and_keep_the_record_whole() -> None:
    import io
    import logging

    from cli.common import hide_console_tracebacks

    prefect_logger = logging.getLogger("prefect")
    console = io.StringIO()
    handler = logging.StreamHandler(console)
    seen: list[logging.LogRecord] = []
    logger = logging.getLogger("prefect.ftpipe-test")
    keep = type("Keep", (logging.Handler,), {"emit": lambda self, r: seen.append(r)})()
    logger.addHandler(keep)
    prefect_logger.addHandler(handler)
    propagate, prefect_logger.propagate = prefect_logger.propagate, False
    try:
        hide_console_tracebacks()
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("task failed")
    finally:
        prefect_logger.removeHandler(handler)
        prefect_logger.propagate = propagate
        logger.removeHandler(keep)
    assert console.getvalue() == "task failed\n"
    assert seen[0].exc_info is not None  # the run log's handler still gets the traceback


def test_unknown_embedded_model_is_named_before_upload(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _run(capsys, str(SAMPLE), "--model", "local:nano-chat")
    assert code == 1
    assert len(lines) == 1, lines
    assert "local:nano-chat" in lines[0] and "local:tiny-chat" in lines[0]


def test_embedded_model_folder_outside_the_roots_is_refused_before_upload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FTPIPE_BACKEND_LOCAL_MODEL_ROOTS", raising=False)
    (tmp_path / "config.json").write_text("{}")
    code, lines = _run(capsys, str(SAMPLE), "--model", f"local:{tmp_path}")
    assert code == 1
    assert len(lines) == 1 and "FTPIPE_BACKEND_LOCAL_MODEL_ROOTS" in lines[0], lines


def _pipe_stdout(monkeypatch: pytest.MonkeyPatch, reader_gone: bool) -> None:
    import os

    read_end, write_end = os.pipe()
    if reader_gone:
        os.close(read_end)
    monkeypatch.setattr(sys, "stdout", os.fdopen(write_end, "w", buffering=1))


def test_a_closed_output_pipe_ends_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ftpipe jobs list | head -1``: no 'error: BrokenPipeError' line, exit 1 (as rich's console does)."""
    from cli.errors import guarded

    _pipe_stdout(monkeypatch, reader_gone=True)

    def lists() -> int:
        for n in range(10):
            print(f"job {n}")
        return 0

    assert guarded("ftpipe jobs", lists) == 1
    assert capsys.readouterr().err == ""
    print("after the pipe broke")  # stdout now points at /dev/null: the exit's flush stays quiet


def test_another_broken_pipe_is_still_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A BrokenPipeError from a socket or child process, with stdout fine, is a failure like any other."""
    from cli.errors import guarded

    _pipe_stdout(monkeypatch, reader_gone=False)

    def breaks() -> int:
        raise BrokenPipeError(32, "Broken pipe")

    assert guarded("ftpipe run", breaks) == 1
    assert "error: BrokenPipeError" in capsys.readouterr().err
