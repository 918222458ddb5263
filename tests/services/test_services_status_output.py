"""``ftpipe services status`` in a pipe or a narrow terminal: whole URLs, one service per line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cli.main import main
from services.manager import ServiceStatus
from services.registry import ServiceRecord


def _record(kind: str, name: str, url: str, ui: str | None, data_dir: str | None) -> ServiceRecord:
    return ServiceRecord(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        pid=4242,
        pid_started=time.time() - 120,
        url=url,
        port=1,
        started_at="2026-12-01T00:00:00Z",
        owner_pid=1,
        owner_command="ftpipe run",
        idle_timeout_s=1800.0,
        log_path="/dev/null",
        ui_url=ui,
        data_dir=data_dir,
    )


def test_status_prints_whole_urls_in_a_pipe(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "a-rather-long-backend-data-directory-name")
    found = [
        ServiceStatus(
            _record("prefect", "prefect", "http://127.0.0.1:48891/api", "http://127.0.0.1:48891", None),
            [],
            time.time() - 5,
            time.time() + 1795,
            265 * 2**20,
        ),
        ServiceStatus(
            _record("backend", "backend-1", "http://127.0.0.1:8765/api/v1/llm", None, data_dir),
            [],
            None,
            None,
            None,
        ),
    ]
    monkeypatch.setattr("services.manager.statuses", lambda root: found)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["services", "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    prefect = next(line for line in lines if line.startswith("prefect "))
    backend = next(line for line in lines if line.startswith("backend ("))
    # Each URL is whole on its service's line (rich's folded cells split them over lines: uncopyable).
    assert "http://127.0.0.1:48891/api" in prefect and "http://127.0.0.1:48891 " in prefect + " "
    assert "http://127.0.0.1:8765/api/v1/llm" in backend and data_dir in backend
    assert "265 MiB" in prefect and "ftpipe run" in backend
    assert not any("\x1b" in line for line in lines)
