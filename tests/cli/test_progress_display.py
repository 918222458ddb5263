"""The run's progress presenters: plain lines, the rich live region, and log lines printed above it.

The rich output is played into a terminal emulator (pyte), so what is asserted is what a person would see on
screen, cursor moves and erasures included.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pyte
import pytest
from rich.console import Console

from cli.progress_display import (
    PlainPresenter,
    ProgressState,
    RichPresenter,
    resolve_mode,
    route_console_logs,
    stage_label,
)
from tasks.progress import ProgressUpdate, publish, subscribe

WIDTH = 110
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # anything but "\n"


class Clock:
    """Monotonic and wall time that move only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now


def _wait(step: int | None, total: int | None = 120, status: str = "running", **kw: object) -> ProgressUpdate:
    # As tasks/wait.py reports it: below 100% until the job has succeeded.
    fraction = min(0.99, step / total) if step is not None and total else None
    fraction = 1.0 if status == "succeeded" else fraction
    return ProgressUpdate(
        "wait",
        f"job ftjob-7: {status} step {step}/{total}",
        job_id="ftjob-7",
        job_status=status,
        fraction=fraction,
        step=step,
        total_steps=total,
        **kw,  # type: ignore[arg-type]
    )


def _screen_lines(raw: str, rows: int = 60) -> list[str]:
    """Everything a terminal shows after ``raw``: scrolled-off history, then the screen, blank lines dropped."""
    screen = pyte.HistoryScreen(WIDTH, rows, history=10_000)
    screen.set_mode(pyte.modes.LNM)  # "\n" returns to column 0, as a tty's output processing does
    pyte.Stream(screen).feed(raw)
    history = ["".join(ch.data for ch in row.values()) for row in screen.history.top]
    return [line.rstrip() for line in [*history, *screen.display] if line.strip()]


# ------------------------------------------------------------------------------------------------ state


@pytest.mark.parametrize(
    ("update", "label"),
    [
        (ProgressUpdate("validate", "x"), "validate"),
        (ProgressUpdate("create-job", "x"), "create"),
        (ProgressUpdate("evaluate", "x"), "eval"),
        (_wait(None, None, status="validating_files"), "queued"),
        (_wait(None, None, status="queued"), "queued"),
        (_wait(3), "training"),
        (_wait(3, status="paused"), "paused"),
        (_wait(120, status="succeeded"), "succeeded"),
        (_wait(120, status="succeeded", reattached=True), "re-attached"),
    ],
)
def test_stage_labels(update: ProgressUpdate, label: str) -> None:
    assert stage_label(update) == label


def test_eta_from_the_measured_rate_counts_down_between_updates() -> None:
    state = ProgressState(started=0.0)
    state.apply(_wait(10, estimated_finish=5000.0), now=10.0)
    # One observation only: the server's estimate stands in.
    assert state.eta(now=10.0, wall_now=4000.0) == 1000.0
    state.apply(_wait(30), now=30.0)  # 20 steps in 20 s: 90 steps left take 90 s
    assert state.eta(now=30.0, wall_now=0.0) == pytest.approx(90.0)
    assert state.eta(now=40.0, wall_now=0.0) == pytest.approx(80.0)
    assert state.eta(now=500.0, wall_now=0.0) == 0.0  # never negative
    # A new stage starts its own rate: eval's first update has no ETA yet.
    state.apply(ProgressUpdate("evaluate", "10/40 answers", fraction=0.25), now=50.0)
    assert state.eta(now=50.0, wall_now=0.0) is None
    state.apply(ProgressUpdate("evaluate", "20/40 answers", fraction=0.5), now=60.0)
    assert state.eta(now=60.0, wall_now=0.0) == pytest.approx(20.0)


@pytest.mark.parametrize("answers", ["evaluate", "smoke"])
def test_metrics_arriving_after_the_answers_began_does_not_take_the_display_back(answers: str) -> None:
    state = ProgressState(started=0.0)
    state.apply(_wait(120, status="succeeded"), now=1.0)
    assert state.apply(ProgressUpdate(answers, "4/4 answers", fraction=1.0), now=2.0)
    assert not state.apply(ProgressUpdate("metrics", "collecting metrics of j"), now=2.5)
    assert state.label in ("eval", "smoke") and state.fraction == 1.0
    # The final model's answers may all come before the wait publishes the job's success.
    state = ProgressState(started=0.0)
    state.apply(_wait(119), now=1.0)
    state.apply(ProgressUpdate(answers, "4/4 answers", fraction=1.0), now=2.0)
    assert not state.apply(_wait(120, status="succeeded"), now=2.1)
    assert not state.apply(ProgressUpdate("metrics", "collecting metrics of j"), now=2.5)
    assert state.label in ("eval", "smoke") and state.fraction == 1.0
    # In the usual order metrics shows first, then the answers take over.
    state = ProgressState(started=0.0)
    state.apply(_wait(120, status="succeeded"), now=1.0)
    assert state.apply(ProgressUpdate("metrics", "collecting metrics of j"), now=1.5)
    assert state.label == "metrics"
    assert state.apply(ProgressUpdate(answers, "1/4 answers", fraction=0.25), now=2.0)


def test_auto_mode_is_plain_unless_the_console_is_a_capable_terminal() -> None:
    assert resolve_mode("auto", Console(file=io.StringIO())) == "plain"
    assert resolve_mode("auto", Console(file=io.StringIO(), force_terminal=True)) == "rich"
    assert resolve_mode("none", Console(file=io.StringIO(), force_terminal=True)) == "none"


# ------------------------------------------------------------------------------------------------ plain


def test_plain_lines_per_stage_and_every_5_percent_without_control_characters() -> None:
    out, clock = io.StringIO(), Clock()
    show = PlainPresenter(out, clock=clock, wall=clock.wall)
    show(
        ProgressUpdate("run", "flow run started", flow_run_id="r1", ui_url="http://ui:4200/runs/flow-run/r1")
    )
    show(ProgressUpdate("validate", "validating \x1b[31mtrain\r.jsonl"))  # a hostile file name
    clock.now += 2
    show(ProgressUpdate("upload", "uploading training file train.jsonl"))
    show(ProgressUpdate("upload", "uploading validation file validation.jsonl"))
    show(_wait(None, None, status="queued"))
    show(_wait(None, None, status="queued"))  # no news for a person: no line
    for step in range(1, 121):
        clock.now += 1
        show(_wait(step, train_loss=2.0 / step, valid_loss=3.0 / step))
    show(_wait(120, status="succeeded", train_loss=2.0 / 120, valid_loss=3.0 / 120))
    text = out.getvalue()
    assert not CONTROL.search(text)
    lines = text.splitlines()
    assert lines[:5] == [
        "Prefect run: http://ui:4200/runs/flow-run/r1",
        "[0:00:00] validate: validating  [31mtrain .jsonl",
        "[0:00:02] upload: uploading training file train.jsonl",
        "[0:00:02] upload: uploading validation file validation.jsonl",
        "[0:00:02] queued: job ftjob-7",
    ]
    training = [line for line in lines if "] training " in line]
    # One line each time another 5% of the 120 steps is done (6 steps), not one per step.
    assert len(training) == 20
    assert training[0] == "[0:00:03] training 1/120 1%: job ftjob-7  train loss 2.0000  valid loss 3.0000"
    assert training[1].startswith("[0:00:08] training 6/120 5%: job ftjob-7  train loss 0.3333")
    assert training[1].endswith("eta 0:01:54")  # 5 steps in 5 s, 114 to go
    assert lines[-1] == "[0:02:02] succeeded 120/120 100%: job ftjob-7"


def test_plain_re_attach_is_one_line() -> None:
    out, clock = io.StringIO(), Clock()
    show = PlainPresenter(out, clock=clock, wall=clock.wall)
    summary = "re-attached to ftjob-7 (succeeded, 120 steps, final train loss 1.2300, valid 1.3100)"
    show(ProgressUpdate("create-job", "job ftjob-7", job_id="ftjob-7", job_status="succeeded"))
    show(
        ProgressUpdate(
            "wait",
            summary,
            job_id="ftjob-7",
            job_status="succeeded",
            fraction=1.0,
            step=120,
            total_steps=120,
            train_loss=1.23,
            valid_loss=1.31,
            reattached=True,
        )
    )
    assert out.getvalue().splitlines() == [
        "[0:00:00] create: job ftjob-7",
        f"[0:00:00] re-attached 120/120 100%: {summary}",
    ]


# ------------------------------------------------------------------------------------------------- rich


def _rich(clock: Clock) -> tuple[io.StringIO, RichPresenter]:
    term = io.StringIO()
    console = Console(file=term, force_terminal=True, width=WIDTH, color_system="truecolor")
    # No refresh thread: the test decides when the region is redrawn.
    presenter = RichPresenter(console, clock=clock, wall=clock.wall, refresh_per_second=4)
    presenter.live.auto_refresh = False
    return term, presenter


def test_rich_region_shows_stage_bar_counts_percent_elapsed_eta_and_losses() -> None:
    clock = Clock()
    term, show = _rich(clock)
    with show.active(), subscribe(show):
        publish(ProgressUpdate("validate", "validating train.jsonl"))
        clock.now += 30
        publish(_wait(30, train_loss=1.5, valid_loss=1.6))
        clock.now += 30
        publish(_wait(60, train_loss=1.23456, valid_loss=1.34567))
    lines = _screen_lines(term.getvalue())
    bar, detail = lines[-2], lines[-1]
    assert bar.startswith("✓ training ") and "━" in bar
    assert "60/120" in bar and " 50%" in bar and "elapsed 0:01:00" in bar
    assert "eta 0:01:00" in bar  # 30 steps in 30 s, 60 to go
    assert "train loss 1.2346" in detail and "valid loss 1.3457" in detail and "job ftjob-7" in detail


def test_rich_marks_a_failed_run() -> None:
    clock = Clock()
    term, show = _rich(clock)
    with pytest.raises(RuntimeError), show.active(), subscribe(show):
        publish(_wait(10))
        raise RuntimeError("boom")
    assert _screen_lines(term.getvalue())[-2].startswith("✗ training")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (["ckpt-2", "ckpt-2"], []),  # every answer came while the job trained (or from the cache)
        (["ckpt-2"], ["ckpt-2"]),  # the model was being answered when the judging began
        ([], ["twin", "twin", "ckpt-2", "ckpt-2"]),  # the last-step twin is not judged here: not counted
    ],
)
def test_rich_region_ends_on_the_answers_at_100_percent_whenever_they_came(
    before: list[str], after: list[str]
) -> None:
    # The updates as a run publishes them: the wait, the metrics, then the smoke stage's count (EvalProgress)
    # of the answers the eval thread gave before the judging started it, and after.
    from tasks.evaluate import EvalProgress

    clock = Clock()
    term, show = _rich(clock)
    progress = EvalProgress("smoke")
    with show.active(), subscribe(show):
        publish(_wait(119, train_loss=1.5, valid_loss=1.6))
        for model in before:
            progress.advance(model)  # silent: the display stays on training
        assert show.state.label == "training"
        clock.now += 1
        publish(_wait(120, status="succeeded"))
        publish(ProgressUpdate("metrics", "collecting metrics of ftjob-7"))
        clock.now += 1
        progress.start(["ckpt-2"], 2)  # the judging: ckpt-2's two answers
        for model in after:
            assert show.state.fraction != 1.0, "finished before ckpt-2's last answer"
            progress.advance(model)
        clock.now += 1
    bar = _screen_lines(term.getvalue())[-2]
    assert bar.startswith("✓ smoke ") and " 100%" in bar and "elapsed 0:00:03" in bar, bar


@pytest.fixture
def terminal_logger() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """Prefect's own console handler on a logger, writing to the same 'terminal' as the console."""
    from prefect.logging.handlers import PrefectConsoleHandler

    term = io.StringIO()
    handler = PrefectConsoleHandler(stream=term)
    handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)-7s | %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("ftpipe.test.progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield term, logger
    logger.removeHandler(handler)


def test_log_lines_are_printed_above_the_region_never_on_the_bar_line(
    terminal_logger: tuple[io.StringIO, logging.Logger],
) -> None:
    term, logger = terminal_logger
    clock = Clock()
    console = Console(file=term, force_terminal=True, width=WIDTH, color_system="truecolor")
    show = RichPresenter(console, clock=clock, wall=clock.wall)
    show.live.auto_refresh = False
    long_url = "http://127.0.0.1:4200/runs/flow-run/" + "0123456789abcdef" * 6  # wider than the terminal
    with show.active(), subscribe(show):
        for step in range(1, 13):
            clock.now += 1
            publish(_wait(step * 10, train_loss=1.0 / step))
            logger.info("[ftjob-7] Step %d/120: training loss=%.4f", step * 10, 1.0 / step)
            if step == 6:
                logger.warning("View at %s", long_url)
    handler = logger.handlers[0]
    assert getattr(handler, "stream", None) is term and handler.console.file is term  # type: ignore[attr-defined]
    lines = _screen_lines(term.getvalue())
    logs = [line for line in lines if "| INFO" in line]
    assert len(logs) == 12
    for step, line in enumerate(logs, start=1):
        # The whole log line, alone: nothing of the bar before it, nothing after it.
        assert re.fullmatch(
            rf"\d\d:\d\d:\d\d \| INFO    \| \[ftjob-7\] Step {step * 10}/120: training loss=\S+", line
        )
    # The URL is wrapped by the terminal, not broken up with spaces by the console.
    warning = next(i for i, line in enumerate(lines) if "| WARNING" in line)
    assert (lines[warning] + lines[warning + 1]).endswith(long_url)
    # Exactly one region is left on screen, at the bottom, under the last log line.
    bars = [line for line in lines if "━" in line]
    assert len(bars) == 1 and lines[-2] == bars[0] and "120/120" in bars[0]
    assert lines.index(bars[0]) > max(lines.index(line) for line in logs)


def test_without_routing_prefects_handler_would_glue_to_the_bar(
    terminal_logger: tuple[io.StringIO, logging.Logger],
) -> None:
    """The failure the routing prevents, shown on the same setup: keeps the test above honest."""
    term, logger = terminal_logger
    clock = Clock()
    console = Console(file=term, force_terminal=True, width=WIDTH)
    show = RichPresenter(console, clock=clock, wall=clock.wall)
    show.live.auto_refresh = False
    with show.live:
        show(_wait(30))
        logger.info("glued")
        show(_wait(40))
    lines = _screen_lines(term.getvalue())
    # The raw line lands on the region's last line; the next redraw erases it and leaves a stale bar behind.
    alone = any(line == "glued" for line in lines)
    assert not alone and sum("━" in line for line in lines) == 2


def test_routing_is_undone_and_leaves_handlers_writing_elsewhere_alone(
    tmp_path: pytest.TempPathFactory,
) -> None:
    term = io.StringIO()
    console = Console(file=term, force_terminal=True, width=WIDTH)
    stream_handler = logging.StreamHandler(term)
    elsewhere = io.StringIO()  # e.g. stderr redirected to a file while stdout is the terminal
    redirected = logging.StreamHandler(elsewhere)
    file_handler = logging.FileHandler(str(tmp_path) + "/log.txt")  # type: ignore[operator]
    logger = logging.getLogger("ftpipe.test.routing")
    for handler in (stream_handler, redirected, file_handler):
        logger.addHandler(handler)
    try:
        with route_console_logs(console):
            assert stream_handler.stream is not term
            assert redirected.stream is elsewhere
            assert file_handler.stream.name.endswith("log.txt")
        assert stream_handler.stream is term
    finally:
        for handler in (stream_handler, redirected, file_handler):
            logger.removeHandler(handler)
        file_handler.close()


@pytest.mark.parametrize("width", [80, 60])
def test_rich_region_fits_a_narrow_terminal_without_cutting_numbers(width: int) -> None:
    clock, term = Clock(), io.StringIO()
    console = Console(file=term, force_terminal=True, width=width)
    show = RichPresenter(console, clock=clock, wall=clock.wall)
    show.live.auto_refresh = False
    with show.active():
        show(_wait(10, total=11417, train_loss=1.2345))
        clock.now += 3723
        show(_wait(3000, total=11417, train_loss=1.2345))
    bar = _screen_lines(term.getvalue())[-2]
    assert "…" not in bar and len(bar) <= width and "━" in bar
    assert re.search(r"3000/11417 +26% .*1:02:03 eta 2:54:40$", bar)  # 2990 steps in 3723 s, 8417 to go
