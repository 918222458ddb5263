"""The bad-input corpus through the CLI: ``ftpipe validate`` rejects each file with a located, short message,
and ``ftpipe run`` on a dataset with a bad training file uploads nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import get_current_settings

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from cli.main import main
from tests.reliability.reliability_kit import REPO, client_for

pytestmark = pytest.mark.integration
BAD = REPO / "tests" / "data" / "bad"
EXPECTED: dict[str, dict[str, Any]] = json.loads((BAD / "EXPECTED.json").read_text(encoding="utf-8"))
# The validator options the corpus uses, and the CLI flag for each.
CLI_FLAGS = {"kind": "--kind", "max_line_bytes": "--max-line-bytes"}
CASES = sorted(n for n, e in EXPECTED.items() if set(e["options"]) <= set(CLI_FLAGS))
MAX_LINES, MAX_WIDTH = 40, 200


def _flags(name: str) -> list[str]:
    return [a for k, v in EXPECTED[name]["options"].items() for a in (CLI_FLAGS[k], str(v))]


def _check_output(name: str, code: int, out: str) -> None:
    expected = EXPECTED[name]
    assert code != 0, out
    path = BAD.relative_to(REPO) / name
    if expected["line"]:
        assert f"{path}:{expected['line']}: {expected['field']}" in out, out
    else:  # a whole-file problem names the file alone, never a line 0
        assert f"{path}: " in out and f"{path}:0" not in out, out
    assert expected["message"] in out, out
    lines = out.splitlines()
    assert len(lines) <= MAX_LINES and max(len(line) for line in lines) <= MAX_WIDTH, out


def test_corpus_is_covered() -> None:
    assert sorted(EXPECTED) == CASES and len(CASES) >= 30  # every corpus file goes through the CLI


@pytest.mark.parametrize("name", CASES)
def test_validate_rejects_with_located_short_message(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every corpus file through the CLI entry point (in-process: ~0.05 s instead of ~2 s a file)."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("COLUMNS", "200")
    code = main(["validate", str(BAD.relative_to(REPO) / name), *_flags(name)])
    captured = capsys.readouterr()
    _check_output(name, code, captured.out + captured.err)


@pytest.mark.parametrize(
    "name", ["invalid_json.jsonl", "gzip.jsonl.gz", "pref_unknown_key.jsonl", "chat_file_as_preference.jsonl"]
)
def test_console_script_validate_in_subprocess(name: str) -> None:
    """The installed ``ftpipe`` console script, as a user runs it."""
    script = shutil.which("ftpipe") or str(Path(sys.executable).with_name("ftpipe"))
    run = subprocess.run(
        [script, "validate", str(BAD.relative_to(REPO) / name), *_flags(name)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )
    _check_output(name, run.returncode, run.stdout + run.stderr)


@pytest.fixture(scope="module")
def plain_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """A fault-free backend for the ``ftpipe run`` checks."""
    with start_backend(BackendSettings(data_dir=tmp_path_factory.mktemp("plain-backend")), port=0) as rb:
        yield rb


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("name", ["invalid_json.jsonl", "no_assistant.jsonl", "utf16.jsonl"])
def test_run_with_bad_train_file_uploads_nothing(
    name: str, plain_backend: RunningBackend, tmp_path: Path
) -> None:
    dataset = tmp_path / "ds"
    dataset.mkdir()
    shutil.copyfile(BAD / name, dataset / "train.jsonl")
    user = f"bad-run-{name}"
    env = {
        **os.environ,
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "MKA1_API_KEY": plain_backend.api_key.get_secret_value(),
        "COLUMNS": "200",
    }
    run = subprocess.run(
        [sys.executable, "-m", "cli", "run", str(dataset), "--model", "local:micro-chat"]
        + ["--base-url", plain_backend.base_url, "--on-behalf-of", user, "--quiet"]
        + ["--state-dir", str(tmp_path / "state"), "--output", str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode != 0, run.stdout + run.stderr
    # One error line on stderr, with the dataset's problems exactly as `ftpipe validate` lists them.
    assert "nothing was uploaded" in run.stderr and "Traceback" not in run.stderr, run.stdout + run.stderr
    with client_for(plain_backend, user) as c:
        assert list(c.files.list()) == [] and list(c.jobs.list()) == []
