"""How ``ftpipe run`` shows progress: a rich live region on a terminal, one plain line per event otherwise.

Presentation only: the stages publish typed ``tasks.progress.ProgressUpdate`` objects, ``ProgressState`` folds
them into what is shown (stage, step/total, losses, elapsed, ETA; pure, the clock is passed in) and a
presenter renders that state. On a terminal the console log handlers are routed through the live region's
console while it is up, so a log line is printed above the region, never on the same line as the bar.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Literal

from tasks.progress import ProgressUpdate, subscribe

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

Mode = Literal["auto", "rich", "plain", "none"]
MODES: tuple[Mode, ...] = ("auto", "rich", "plain", "none")
MODE_HELP = (
    "how to show progress: 'rich' a live bar (stage, step/total, percent, elapsed, ETA, losses) with log lines"
    " above it, 'plain' one line per stage change and every 5%% of training (no control characters), 'none'"
    " nothing but logs and the summary; 'auto' is rich on a terminal, else plain (default: %(default)s);"
    " example: --progress plain"
)

# A waiting job's status names its phase; the other stages are named after the task that published them.
_STATUS_LABELS = {"validating_files": "queued", "queued": "queued", "running": "training"}
_STAGE_LABELS = {"create-job": "create", "evaluate": "eval"}
# After training the metrics and the answers run beside each other (the fine-tuned model is asked the moment
# the wait sees its job succeed, which may be before the wait's own "succeeded" update): once answers are
# shown, a later "succeeded" or metrics update does not take the display back, so the region ends on the
# run's last stage.
_AFTER_TRAINING_RANK = {"succeeded": 0, "metrics": 0, "eval": 1, "smoke": 1}
# Plain mode prints a training line each time the job crosses another 1/_PLAIN_BUCKETS of its steps.
_PLAIN_BUCKETS = 20
# Without a known total, a line every this many steps.
_PLAIN_STEP_EVERY = 10
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def run_link(url: str) -> str:
    """The first line of a run with a Prefect UI: its page (the server's own UI line says "Prefect UI")."""
    return f"Prefect run: {url}"


class _NotPrefectRunLink(logging.Filter):
    """Drops Prefect's own "View at <url>" console line while the display prints the run's page itself.

    Prefect marks that record console-only (``send_to_api`` False): the run log in Prefect loses nothing, and
    its other lines still print.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name.startswith("prefect.flow_runs")
            and getattr(record, "send_to_api", True) is False
            and record.getMessage().startswith("View at ")
        )


@contextmanager
def one_run_link() -> Iterator[None]:
    """While the block runs, the console shows the run's page once: ours (`run_link`), not Prefect's too."""
    from cli.common import console_log_handlers

    dropper = _NotPrefectRunLink()
    handlers = console_log_handlers()
    for handler in handlers:
        handler.addFilter(dropper)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(dropper)


def stage_label(update: ProgressUpdate) -> str:
    """The stage a person reads: validate, estimate, upload, create, queued, training, metrics, eval, smoke."""
    if update.reattached:
        return "re-attached"
    if update.stage == "wait":
        status = update.job_status or "queued"
        return _STATUS_LABELS.get(status, status)
    return _STAGE_LABELS.get(update.stage, update.stage)


def clock_text(seconds: float) -> str:
    """``H:MM:SS``, as the elapsed and ETA fields show it."""
    whole = max(0, int(round(seconds)))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


@dataclass
class ProgressState:
    """What the display shows, folded from the updates; every time is passed in (monotonic and wall)."""

    started: float
    stage: str = "run"
    label: str = "starting"
    message: str = "starting the fine-tune flow"
    job_id: str | None = None
    step: int | None = None
    total_steps: int | None = None
    fraction: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    estimated_finish: float | None = None
    ui_url: str | None = None
    # (time, fraction) when the current stage first reported a fraction, and the latest one: the rate of the ETA.
    _origin: tuple[float, float] | None = field(default=None, repr=False)
    _latest: tuple[float, float] | None = field(default=None, repr=False)

    def apply(self, update: ProgressUpdate, now: float) -> bool:
        """Fold one update in; True when the stage people see changed."""
        if update.stage == "run":
            self.ui_url = update.ui_url
            return False
        label = stage_label(update)
        if _AFTER_TRAINING_RANK.get(label, 1) < _AFTER_TRAINING_RANK.get(self.label, -1):
            return False
        changed = label != self.label
        self.stage, self.label, self.message = update.stage, label, update.message
        if update.stage == "wait" and not update.reattached and update.job_id:
            self.message = f"job {update.job_id}"  # status and step are the label and the counts already
        if changed:
            self._origin = self._latest = None
            self.fraction = None
        if update.job_id is not None:
            self.job_id = update.job_id
        if update.stage == "wait":
            self.step, self.total_steps = update.step, update.total_steps
            self.train_loss = update.train_loss if update.train_loss is not None else self.train_loss
            self.valid_loss = update.valid_loss if update.valid_loss is not None else self.valid_loss
            self.estimated_finish = update.estimated_finish
        if update.fraction is not None:
            self.fraction = update.fraction
            if self._origin is None:
                self._origin = (now, update.fraction)
            self._latest = (now, update.fraction)
        return changed

    def elapsed(self, now: float) -> float:
        """Seconds since the display started."""
        return now - self.started

    def eta(self, now: float, wall_now: float) -> float | None:
        """Seconds left in the current stage: measured rate when there is one, else the server's estimate."""
        if self.fraction is not None and self.fraction >= 1.0:
            return 0.0
        if self._origin is not None and self._latest is not None:
            (t0, f0), (t1, f1) = self._origin, self._latest
            if f1 > f0 and t1 > t0:
                left = (1.0 - f1) * (t1 - t0) / (f1 - f0)
                return max(0.0, left - (now - t1))  # counts down between updates
        if self.estimated_finish is not None and self.label == "training":
            return max(0.0, self.estimated_finish - wall_now)
        return None

    def counts_text(self) -> str:
        """``60/120`` for training steps, else nothing."""
        if self.step is None or self.stage != "wait":
            return ""
        return f"{self.step}/{self.total_steps}" if self.total_steps else f"step {self.step}"

    def losses_text(self) -> str:
        """``train loss 1.2345  valid loss 1.3456`` as far as known."""
        parts = []
        if self.train_loss is not None:
            parts.append(f"train loss {self.train_loss:.4f}")
        if self.valid_loss is not None:
            parts.append(f"valid loss {self.valid_loss:.4f}")
        return "  ".join(parts)


def plain_text(text: str) -> str:
    """``text`` without control characters (a file name or server message may hold any)."""
    return _CONTROL.sub(" ", text)


class PlainPresenter:
    """One line per stage change, per 5% of training (or every 10 steps) and per re-attach; no control codes."""

    def __init__(
        self,
        out: IO[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        prefix: str = "",
    ) -> None:
        self.out, self.clock, self.wall, self.prefix = out, clock, wall, prefix
        self.state = ProgressState(started=clock())
        # What the last printed line showed: a new line is due when the stage moves past it.
        self._bucket: int | None = None
        self._step: int | None = None
        self._message: str | None = None

    def __call__(self, update: ProgressUpdate) -> None:
        now = self.clock()
        changed = self.state.apply(update, now)
        if update.stage == "run":
            if update.ui_url:
                self._print(run_link(update.ui_url))
            return
        if changed or update.reattached or self._due():
            self._print(self.line(now))
            s = self.state
            self._bucket = None if s.fraction is None else int(s.fraction * _PLAIN_BUCKETS)
            self._step, self._message = s.step, s.message

    def _due(self) -> bool:
        s = self.state
        if s.fraction is not None:
            return int(s.fraction * _PLAIN_BUCKETS) != self._bucket
        if s.step is not None:
            return self._step is None or s.step >= self._step + _PLAIN_STEP_EVERY
        return s.message != self._message  # the stage's next message (e.g. the second upload)

    def line(self, now: float) -> str:
        """The state as one line, e.g. ``[0:00:31] training 60/120 50%  train loss ...  eta 0:00:30``."""
        s = self.state
        parts = [f"[{clock_text(s.elapsed(now))}] {s.label}"]
        counts = s.counts_text()
        if counts:
            parts.append(counts)
        if s.fraction is not None:
            parts.append(f"{100 * s.fraction:.0f}%")
        head = " ".join(parts)
        tail = [s.message]
        if s.label == "training" and s.losses_text():  # a re-attach summary names its losses itself
            tail.append(s.losses_text())
        eta = s.eta(now, self.wall())
        if eta is not None and s.fraction is not None and s.fraction < 1.0:
            tail.append(f"eta {clock_text(eta)}")
        return plain_text(f"{head}: " + "  ".join(tail))

    def _print(self, line: str) -> None:
        print(self.prefix + line, file=self.out, flush=True)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Nothing to set up or tear down for plain lines."""
        yield


class RichPresenter:
    """A live region (spinner, stage, bar, step/total, percent, elapsed, ETA, losses) under the log lines."""

    def __init__(
        self,
        console: Console,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        refresh_per_second: float = 4,
    ) -> None:
        from rich.live import Live

        self.console, self.clock, self.wall = console, clock, wall
        self.state = ProgressState(started=clock())
        self.outcome: Literal["running", "done", "failed", "interrupted"] = "running"
        self.live = Live(
            self,
            console=console,
            refresh_per_second=refresh_per_second,
            transient=False,
            redirect_stdout=True,
            redirect_stderr=True,
        )

    def __call__(self, update: ProgressUpdate) -> None:
        self.state.apply(update, self.clock())
        if update.stage == "run" and update.ui_url:
            from rich.text import Text

            self.console.print(Text(run_link(update.ui_url)), soft_wrap=True)
        self.live.refresh()

    def __rich__(self) -> RenderableType:
        return self.render(self.clock())

    def render(self, now: float, *, one_line: bool = False, reserve: int = 0) -> RenderableType:
        """The region: bar line, then losses and the stage's message (``one_line``: the bar line and losses
        only, ``reserve`` cells left of it for a name)."""
        from rich.progress_bar import ProgressBar
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        s = self.state
        marks = {"done": "[green]✓", "failed": "[red]✗", "interrupted": "[yellow]!"}
        mark: RenderableType = (
            Spinner("dots", style="cyan")
            if self.outcome == "running"
            else Text.from_markup(marks[self.outcome])
        )
        fraction = s.fraction
        running = self.outcome == "running"
        eta = s.eta(now, self.wall())
        fields = [s.counts_text(), "" if fraction is None else f"{100 * fraction:3.0f}%"]
        elapsed = clock_text(s.elapsed(now))
        left = "" if eta is None or fraction is None or fraction >= 1 else clock_text(eta)
        # The bar takes what the text leaves of the line (10 to 40 cells); a narrow terminal drops the words.
        for words in (("elapsed ", "eta "), ("", "eta ")):
            right = " ".join(f for f in [*fields, words[0] + elapsed, words[1] + left if left else ""] if f)
            if one_line and s.losses_text():
                right += "  " + s.losses_text()
            # The mark and three separators, and whatever the caller puts left of the line.
            bar_width = self.console.width - reserve - len(s.label) - len(right) - 5
            if bar_width >= 16:
                break
        bar = ProgressBar(
            total=100.0,
            completed=100.0 * (fraction or 0.0),
            width=max(10, min(40, bar_width)),
            pulse=fraction is None and running,
        )
        top = Table.grid(padding=(0, 1))
        for _ in range(4):
            top.add_column(no_wrap=True)
        top.add_row(mark, Text(s.label, style="bold"), bar, Text(right, style="dim"))
        if one_line:
            return top
        bottom = Text("  ", no_wrap=True, overflow="ellipsis")
        if s.losses_text():
            bottom.append(s.losses_text(), style="bold")
            bottom.append("  ")
        bottom.append(s.message, style="dim")
        grid = Table.grid()
        grid.add_row(top)
        grid.add_row(bottom)
        return grid

    @contextmanager
    def active(self) -> Iterator[None]:
        """The live region is up, with the console log handlers printing above it, while the block runs."""
        with self.live, route_console_logs(self.console):
            try:
                yield
            except KeyboardInterrupt:
                self.outcome = "interrupted"
                raise
            except BaseException:
                self.outcome = "failed"
                raise
            else:
                self.outcome = "done"
            finally:
                self.live.refresh()


class _ConsoleLines(io.TextIOBase):
    """A text stream that prints each finished line through a rich Console, i.e. above its live region.

    Not rich's FileProxy: a Console given a FileProxy as its file unwraps it and writes to the terminal
    directly, which is how a log line ends up glued to the bar.
    """

    def __init__(self, console: Console, original: Any) -> None:
        super().__init__()
        from rich.ansi import AnsiDecoder

        self._console, self._original = console, original
        self._decoder = AnsiDecoder()
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        from rich.text import Text

        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
        if lines:
            # The handler's own colours survive: its ANSI codes are decoded back into styled text.
            # soft_wrap: the terminal wraps a long line, so a URL in it stays whole (and clickable).
            decoded = Text("\n").join(self._decoder.decode_line(line) for line in lines)
            self._console.print(decoded, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest:
            self.write(rest + "\n")

    def isatty(self) -> bool:
        isatty = getattr(self._original, "isatty", None)
        return bool(isatty()) if callable(isatty) else False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", None) or "utf-8"


def _shares_the_screen(stream: object, console: Console) -> bool:
    """True when ``stream`` prints where the live region is: the console's own file, or a terminal.

    A handler whose stream is redirected elsewhere (``2>run.log``, ``2>/dev/null``) is left writing there.
    """
    if stream is None:
        return False
    if stream is console.file:
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # closed
        return False


@contextmanager
def route_console_logs(console: Console) -> Iterator[None]:
    """Console log handlers (Prefect's and ours) print through ``console`` while the block runs.

    Handlers keep their own format and colours; each finished line goes to the console, which prints it above
    its live region. File handlers and handlers writing elsewhere are left alone.
    """
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    swapped: list[tuple[logging.StreamHandler[Any], Any, Any]] = []
    seen: set[int] = set()
    for logger in loggers:
        for handler in logger.handlers:
            if id(handler) in seen or isinstance(handler, logging.FileHandler):
                continue
            seen.add(id(handler))
            if not isinstance(handler, logging.StreamHandler) or isinstance(handler.stream, _ConsoleLines):
                continue
            if not _shares_the_screen(handler.stream, console):
                continue
            proxy = _ConsoleLines(console, handler.stream)
            inner = getattr(handler, "console", None)  # Prefect's handler prints through its own rich Console
            old_inner_file = inner.file if inner is not None else None
            swapped.append((handler, handler.stream, old_inner_file))
            handler.acquire()
            try:
                handler.stream = proxy
                if inner is not None:
                    inner.file = proxy
            finally:
                handler.release()
    try:
        yield
    finally:
        for handler, stream, inner_file in swapped:
            handler.acquire()
            try:
                proxy_stream = handler.stream
                handler.stream = stream
                inner = getattr(handler, "console", None)
                if inner is not None and inner_file is not None:
                    inner.file = inner_file
            finally:
                handler.release()
            if hasattr(proxy_stream, "flush"):
                proxy_stream.flush()


def _config_of_caller() -> str:
    """The sweep config whose flow run published the update (listeners run in the publisher's thread); ""
    for the sweep's own run."""
    from prefect.context import FlowRunContext

    from flows.sweep import config_of_run

    ctx = FlowRunContext.get()
    return config_of_run(ctx.flow_run.name if ctx is not None and ctx.flow_run is not None else None) or ""


def _sweep_interrupted() -> bool:
    from tasks.runtime import interrupt_requested

    return interrupt_requested()


class PlainSweepPresenter:
    """`PlainPresenter`'s lines for each config of a sweep, each line led by the config's name."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.configs: dict[str, PlainPresenter] = {}
        self._lock = threading.Lock()

    def __call__(self, update: ProgressUpdate) -> None:
        if _sweep_interrupted():
            return  # after Ctrl-C the configs still cancel their jobs; the sweep ends in one line
        name = _config_of_caller()
        if name and update.stage == "run":
            return  # the sweep's page is printed once; each config's run is linked from it in the UI
        with self._lock:
            if name not in self.configs:
                self.configs[name] = PlainPresenter(self.out, prefix=f"{name}: " if name else "")
            self.configs[name](update)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Nothing to set up or tear down for plain lines."""
        yield


class RichSweepPresenter:
    """A live region with one line per config of a sweep (its stage, bar, counts, times and losses)."""

    def __init__(self, console: Console, *, clock: Callable[[], float] = time.monotonic) -> None:
        from rich.live import Live

        self.console, self.clock = console, clock
        self.configs: dict[str, RichPresenter] = {}
        self._lock = threading.Lock()
        self.live = Live(
            self,
            console=console,
            refresh_per_second=4,
            transient=False,
            redirect_stdout=True,
            redirect_stderr=True,
        )

    def __call__(self, update: ProgressUpdate) -> None:
        if _sweep_interrupted():
            return  # after Ctrl-C the configs still cancel their jobs; the sweep ends in one line
        name = _config_of_caller()
        if not name:
            if update.stage == "run" and update.ui_url:
                from rich.text import Text

                self.console.print(Text(run_link(update.ui_url)), soft_wrap=True)
            return
        with self._lock:
            if name not in self.configs:
                self.configs[name] = RichPresenter(self.console, clock=self.clock)
            self.configs[name].state.apply(update, self.clock())
        self.live.refresh()

    def __rich__(self) -> RenderableType:
        from rich.table import Table
        from rich.text import Text

        now = self.clock()
        with self._lock:
            configs = dict(self.configs)
        width = max((len(name) for name in configs), default=0)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, width=width)
        grid.add_column(no_wrap=True)
        for name, presenter in configs.items():
            grid.add_row(Text(name, style="bold"), presenter.render(now, one_line=True, reserve=width + 1))
        return grid

    @contextmanager
    def active(self) -> Iterator[None]:
        """The live region is up, with the console log handlers printing above it, while the block runs."""
        with self.live, route_console_logs(self.console):
            outcome: Literal["done", "failed", "interrupted"] = "failed"
            try:
                yield
                outcome = "done"
            except KeyboardInterrupt:
                outcome = "interrupted"
                raise
            finally:
                for presenter in self.configs.values():
                    presenter.outcome = outcome
                self.live.refresh()


class _NoPresenter:
    def __call__(self, update: ProgressUpdate) -> None:
        return None

    @contextmanager
    def active(self) -> Iterator[None]:
        yield


def resolve_mode(mode: Mode, console: Console) -> Literal["rich", "plain", "none"]:
    """``auto`` is rich on a terminal that can move the cursor, else plain."""
    if mode != "auto":
        return mode
    return "rich" if console.is_terminal and not console.is_dumb_terminal else "plain"


def make_console(mode: Mode) -> Console:
    """The console the run prints through (``rich`` forces terminal output even into a pipe)."""
    from rich.console import Console

    return Console(force_terminal=True) if mode == "rich" else Console()


@contextmanager
def show_progress(mode: Mode, console: Console, *, per_config: bool = False) -> Iterator[None]:
    """Render every progress update published while the block runs, as ``mode`` says (``per_config``: one
    line per config of a sweep)."""
    presenter: PlainPresenter | RichPresenter | PlainSweepPresenter | RichSweepPresenter | _NoPresenter
    resolved = resolve_mode(mode, console)
    if resolved == "rich":
        presenter = RichSweepPresenter(console) if per_config else RichPresenter(console)
    elif resolved == "plain":
        presenter = PlainSweepPresenter(console.file) if per_config else PlainPresenter(console.file)
    else:
        presenter = _NoPresenter()
    # The presenters print the run's page (run_link); with none, Prefect's own line is the only one left.
    links = one_run_link() if resolved != "none" else nullcontext()
    with links, presenter.active(), subscribe(presenter):
        yield
