"""``ftpipe run``'s progress output end to end (fake API, real flow): plain lines off a terminal, the Prefect
UI link, a re-run's one-line re-attach summary and the ``--progress`` modes."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

from cli.main import main
from flows.backend_runtime import use_connection
from tasks.runtime import prefect_ui_url
from tests.pipeline.fake_api import FakeMKA1

pytestmark = pytest.mark.usefixtures("prefect_harness")
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # anything but "\n"
LINE = re.compile(
    r"\[\d+:\d\d:\d\d\] (?P<label>[a-z-]+)(?: (?P<counts>\d+/\d+))?(?: (?P<pct>\d+)%)?: (?P<rest>.*)"
)


def _argv(dataset_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "run",
        str(dataset_dir),
        "--model",
        "local:micro-chat",
        "--poll-interval",
        "0.01",
        "--state-dir",
        str(tmp_path / "state"),
        "--output",
        str(tmp_path / "out"),
        "--quiet",
        *extra,
    ]


def test_plain_progress_off_a_terminal_then_one_line_on_re_attach(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.total_steps = 6
    fake.timeline = ["queued", *["running"] * 6, "succeeded"]
    argv = _argv(dataset_dir, tmp_path)
    with use_connection(fake.connection()):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert not CONTROL.search(out)  # stdout is not a terminal: no colours, no cursor moves, no spinner
    lines = out.splitlines()
    # The harness's server has a UI address: the run's page is the first line.
    assert re.fullmatch(r"Prefect run: http://127\.0\.0\.1:\d+/runs/flow-run/[0-9a-f-]{36}", lines[0])
    progress = [m for m in map(LINE.fullmatch, lines) if m]
    labels = [m["label"] for m in progress]
    stages = [label for i, label in enumerate(labels) if i == 0 or labels[i - 1] != label]
    # No "estimate": without a budget it is made beside the uploads and the training, not as a stage.
    assert stages == [
        "validate",
        "upload",
        "create",
        "queued",
        "training",
        "succeeded",
        "metrics",
        "eval",
    ]
    training = [m for m in progress if m["label"] == "training"]
    assert [m["counts"] for m in training] == [f"{n}/6" for n in range(1, 7)]  # 6 steps: each is 5% or more
    # The fake's step n has train_loss 1/n and valid_loss 1/(n+2).
    assert training[-1]["rest"].startswith("job ftjob-3  train loss 0.1667  valid loss 0.1250")
    assert "fine-tune result" in out and lines.index("fine-tune result") > lines.index(training[-1].string)

    # --rerun: without it the unchanged re-run is answered from the state dir and no flow runs (tested in
    # test_rerun.py); here the flow re-attaches.
    with use_connection(fake.connection()):
        assert main([*argv, "--rerun"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (reattach,) = [line for line in lines if "re-attached" in line]
    assert re.fullmatch(
        r"\[\d+:\d\d:\d\d\] re-attached 6/6 100%: re-attached to ftjob-3"
        r" \(succeeded, 6 steps, final train loss 0\.1667, valid 0\.1250\)",
        reattach,
    )
    assert not [line for line in lines if "] training " in line or "] queued" in line]  # nothing replayed


def test_progress_none_prints_only_the_summary(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with use_connection(fake.connection()):
        assert main(_argv(dataset_dir, tmp_path, "--progress", "none")) == 0
    out = capsys.readouterr().out
    assert not LINE.search(out) and "Prefect run" not in out
    assert "fine-tune result" in out


def test_rich_when_asked_even_into_a_pipe(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with use_connection(fake.connection()):
        assert main(_argv(dataset_dir, tmp_path, "--progress", "rich", "--no-eval")) == 0
    out = capsys.readouterr().out
    assert "\x1b[" in out and "━" in out  # the live region, drawn with control codes
    # Its last frame: the smoke checks (no eval set) finished.
    assert re.search(r"✓\S* \S*smoke\S* .*100%", out)
    assert "fine-tune result" in out


def test_prefect_ui_url_only_when_a_ui_is_configured() -> None:
    run_id = "3f1c1e4e-0000-4000-8000-000000000001"
    with temporary_settings(updates={PREFECT_UI_URL: "http://prefect.local:4200"}):
        assert prefect_ui_url(run_id) == f"http://prefect.local:4200/runs/flow-run/{run_id}"
    with temporary_settings(
        updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}, set_defaults={PREFECT_UI_URL: None}
    ):
        assert prefect_ui_url(run_id) == f"http://127.0.0.1:4200/runs/flow-run/{run_id}"
    # The temporary server a bare `ftpipe run` starts has no address in the settings, hence no UI link.
    with temporary_settings(restore_defaults={PREFECT_API_URL, PREFECT_UI_URL}):
        assert prefect_ui_url(run_id) is None
    assert prefect_ui_url(None) is None


@contextmanager
def prefect_console_on_the_terminal() -> Iterator[None]:
    """Prefect's console handler writes where the run's console does, as stderr and stdout share a terminal.

    The handler was created once for the session, bound to whatever stream was stderr then; this is called
    inside the test so that stdout is the test's own capture.
    """
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    saved = [(h.stream, h.console.file) for h in handlers]
    for h in handlers:
        h.stream = h.console.file = sys.stdout
    try:
        yield
    finally:
        for h, (stream, file) in zip(handlers, saved, strict=True):
            h.stream, h.console.file = stream, file


def test_a_failed_job_closes_the_region_marked_failed_with_the_reason_below_it(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyte

    fake.timeline = ["running", "failed"]
    with use_connection(fake.connection()), prefect_console_on_the_terminal():
        assert main(_argv(dataset_dir, tmp_path, "--progress", "rich")) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    screen = pyte.HistoryScreen(200, 40, history=5000)
    screen.set_mode(pyte.modes.LNM)
    pyte.Stream(screen).feed(captured.out)
    rows = ["".join(c.data for c in row.values()) for row in screen.history.top] + screen.display
    lines = [row.rstrip() for row in rows if row.strip()]
    (bar,) = [i for i, line in enumerate(lines) if "━" in line]  # one region left, in its last state
    assert lines[bar].startswith("✗ failed") and "1/4" in lines[bar]
    assert lines[bar + 2] == "job ftjob-3 failed: [training_error] boom"  # after the region, not inside it
    # Prefect's one line for the failed task went through the live console: above the region, on its own.
    errors = [i for i, line in enumerate(lines) if "| ERROR" in line]
    assert errors and max(errors) < bar
    assert all(re.match(r"\d\d:\d\d:\d\d\.\d+ \| ERROR +\| (Task|Flow) run", lines[i]) for i in errors)


@pytest.mark.parametrize("mode", ["plain", "none"])
def test_the_run_page_is_printed_once_and_prefect_keeps_its_other_lines(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    """Without --quiet Prefect logs its own "View at <url>" beside our "Prefect run: <url>": one is dropped
    from the console (ours, while a display prints it; with --progress none Prefect's is the only one)."""
    import flows.fine_tune  # noqa: F401  # Prefect configures its console handler when its flows are imported
    from cli.common import _PREFECT_LEVELLED_LOGGERS

    # Prefect's INFO lines, as a run without --quiet shows them (an earlier --quiet test may have lowered them;
    # the autouse fixture restores the levels afterwards).
    for name in _PREFECT_LEVELLED_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    argv = [arg for arg in _argv(dataset_dir, tmp_path, "--progress", mode, "--no-eval") if arg != "--quiet"]
    with use_connection(fake.connection()), prefect_console_on_the_terminal():
        assert main(argv) == 0
    out = capsys.readouterr().out
    links = [line for line in out.splitlines() if re.search(r"/runs/flow-run/[0-9a-f-]{36}", line)]
    assert len(links) == 1, links
    if mode == "plain":
        assert links[0].startswith("Prefect run: http")
    else:
        assert " - View at http" in links[0]
    assert re.search(r"\| INFO +\| Flow run '[^']+' - Beginning flow run", out)  # Prefect's other lines stay
    assert "Finished in state Completed()" in out


def _sweep_file(dataset_dir: Path, tmp_path: Path) -> Path:
    import json

    base = {
        "dataset_dir": str(dataset_dir),
        "model": "local:micro-chat",
        "poll_interval_s": 0.01,
        "poll_max_interval_s": 0.02,
        "state_dir": str(tmp_path / "state"),
        "evaluate": False,
        "gate_min_improvement": None,
    }
    configs = [{"name": "a", "seed": 1}, {"name": "b", "seed": 2}]
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"base": base, "configs": configs, "output_dir": str(tmp_path / "sw")}))
    return path


def test_sweep_plain_progress_one_line_per_config_stage(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.total_steps = 4
    fake.timeline = ["queued", *["running"] * 4, "succeeded"]
    argv = ["sweep", str(_sweep_file(dataset_dir, tmp_path)), "--progress", "plain", "--quiet"]
    with use_connection(fake.connection()):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert not CONTROL.search(out)
    lines = out.splitlines()
    # The sweep's page, once; the configs' runs are linked from it.
    assert re.fullmatch(r"Prefect run: http://127\.0\.0\.1:\d+/runs/flow-run/[0-9a-f-]{36}", lines[0])
    assert sum("/runs/flow-run/" in line for line in lines) == 1
    for name in ("a", "b"):
        mine = [m for line in lines if line.startswith(f"{name}: ") and (m := LINE.fullmatch(line[3:]))]
        labels = [m["label"] for m in mine]
        stages = [label for i, label in enumerate(labels) if i == 0 or labels[i - 1] != label]
        assert stages == [  # no "estimate" stage: a config without a budget estimates beside its uploads
            "validate",
            "upload",
            "create",
            "queued",
            "training",
            "succeeded",
            "metrics",
            "smoke",
        ], labels
        assert [m["counts"] for m in mine if m["label"] == "training"] == [f"{n}/4" for n in range(1, 5)]
    assert "sweep" in out and "best by" in out  # the comparison table follows


def test_sweep_rich_progress_a_row_per_config(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyte

    argv = ["sweep", str(_sweep_file(dataset_dir, tmp_path)), "--progress", "rich", "--quiet"]
    with use_connection(fake.connection()):
        assert main(argv) == 0
    screen = pyte.HistoryScreen(160, 60, history=5000)
    screen.set_mode(pyte.modes.LNM)
    pyte.Stream(screen).feed(capsys.readouterr().out)
    rows = ["".join(c.data for c in row.values()) for row in screen.history.top] + screen.display
    lines = [row.rstrip() for row in rows if row.strip()]
    # The region's last frame: one line per config, each finished (smoke checks done) with its losses.
    bars = [line for line in lines if "━" in line and line.split()[0] in ("a", "b")]
    assert sorted(line.split()[0] for line in bars) == ["a", "b"], lines
    assert all(re.search(r"✓ smoke .*100%.*train loss", line) for line in bars), bars
