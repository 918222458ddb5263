"""``ftpipe run`` twice against a real embedded backend: the second, unchanged, prints the first's summary
without importing Prefect; ``--rerun`` or an edited input file runs the flow again."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.settings import get_current_settings

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "customer-support"
# `python -X importtime` names every module it imports on stderr, one per line: "import time: ... | prefect".
PREFECT_IMPORTED = re.compile(r"^import time:.*\|\s*prefect(\.|$)", re.MULTILINE)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    with start_backend(BackendSettings(data_dir=tmp_path_factory.mktemp("rerun-data"), port=0)) as rb:
        yield rb


def _summary(stdout: str) -> str:
    return stdout[stdout.index("fine-tune result") :]


def test_an_unchanged_rerun_skips_prefect_and_an_edit_or_rerun_runs_the_flow(
    backend: RunningBackend, tmp_path: Path
) -> None:
    data = tmp_path / "ds"
    data.mkdir()
    for name, n in (("train.jsonl", 40), ("validation.jsonl", 10), ("smoke.jsonl", 1)):
        lines = (SAMPLE / name).read_text(encoding="utf-8").splitlines()[:n]
        (data / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MKA1_", "FTPIPE_", "PREFECT_API_URL"))}
    env.update(
        FTPIPE_STATE_DIR=str(tmp_path / "state"),
        FTPIPE_SERVICES_DIR=str(tmp_path / "services"),
        FTPIPE_TRACKING_ENABLED="false",
        FTPIPE_BACKEND_DATA_DIR=str(backend.data_dir),  # the running backend is the one asked
        FTPIPE_BACKEND_PORT=str(backend.port),
        PREFECT_API_URL=str(get_current_settings().api.url),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PYTHONPATH=str(REPO),
    )
    argv = [sys.executable, "-X", "importtime", "-m", "cli", "run", str(data), "--model", "local:micro-chat"]
    argv += ["--epochs", "1", "--no-eval", "--poll-interval", "0.5", "--output", str(tmp_path / "out")]
    argv += ["--progress", "plain"]

    def run(*extra: str) -> tuple[str, bool]:
        proc = subprocess.run(
            [*argv, *extra], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stdout + proc.stderr
        return proc.stdout, PREFECT_IMPORTED.search(proc.stderr) is not None

    first, prefect = run()
    assert prefect and "unchanged since" not in first

    again, prefect = run()
    assert not prefect  # answered before Prefect (or the flow modules) were imported
    line = again.splitlines()[0]
    assert re.fullmatch(
        r"unchanged since run micro-chat-s42 of \d{4}-\d\d-\d\d \d\d:\d\d UTC \(http://127\.0\.0\.1:\d+/runs/"
        r"flow-run/[0-9a-f-]{36}\): job ftjob_\w+ still succeeded, nothing was run; --rerun runs the flow again",
        line,
    ), line
    assert _summary(again) == _summary(first)

    forced, prefect = run("--rerun")
    assert prefect and "unchanged since" not in forced and "re-attached to ftjob_" in forced

    smoke = data / "smoke.jsonl"
    smoke.write_text(smoke.read_text(encoding="utf-8") + '{"prompt": "Hello?"}\n', encoding="utf-8")
    edited, prefect = run()
    assert prefect and "unchanged since" not in edited and "re-attached to ftjob_" in edited

    last, prefect = run()  # the edited dataset's run was recorded in turn
    assert not prefect and last.startswith("unchanged since run") and _summary(last) == _summary(edited)
