"""What ``ftpipe jobs`` and ``ftpipe chat`` show: rows, fields and lines built from client models (pure
functions), and ``Screen``, which prints them as rich tables on a terminal and as plain aligned text in a
pipe (nothing folded or cut, so ``grep``/``awk`` work); ``--json`` output is built here too."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from client.models import FineTuningJob, FineTuningJobCheckpoint, FineTuningJobEvent

NONE = "-"
JOB_COLUMNS = ("ID", "STATUS", "MODEL", "FINE-TUNED MODEL", "CREATED", "FINISHED", "TOKENS")
CHECKPOINT_COLUMNS = ("STEP", "CHECKPOINT MODEL", "TRAIN LOSS", "VALID LOSS", "FULL VALID LOSS")


def when(timestamp: int | None) -> str:
    """A unix timestamp as local ``YYYY-MM-DD HH:MM:SS``."""
    if timestamp is None:
        return NONE
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float) -> str:
    """``1h02m03s`` / ``2m05s`` / ``7s``."""
    s = max(int(seconds), 0)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _text(value: Any) -> str:
    if value is None or value == "" or value == {} or value == []:
        return NONE
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def job_row(job: FineTuningJob) -> tuple[str, ...]:
    """One ``jobs list`` row."""
    tokens = NONE if job.trained_tokens is None else f"{job.trained_tokens:,}"
    return (
        job.id,
        str(job.status),
        _text(job.model),
        _text(job.fine_tuned_model),
        when(job.created_at),
        when(job.finished_at),
        tokens,
    )


def _hyperparameters(job: FineTuningJob) -> dict[str, Any] | None:
    method = job.method
    if method is not None:
        section = getattr(method, method.type, None)
        hp = getattr(section, "hyperparameters", None)
        if hp is not None:
            return dict(hp.model_dump(exclude_none=True))
    return job.hyperparameters


def job_fields(job: FineTuningJob) -> list[tuple[str, str]]:
    """``jobs show``'s field/value pairs, in reading order."""
    took = None
    if job.created_at is not None and job.finished_at is not None:
        took = duration(job.finished_at - job.created_at)
    error = None
    if job.error is not None and (job.error.code or job.error.message):
        error = f"[{job.error.code or 'error'}] {job.error.message or ''}".strip()
    fields: list[tuple[str, Any]] = [
        ("id", job.id),
        ("status", str(job.status)),
        ("model", job.model),
        ("fine_tuned_model", job.fine_tuned_model),
        ("method", job.method.type if job.method else None),
        ("hyperparameters", _hyperparameters(job)),
        ("seed", job.seed),
        ("suffix", job.suffix),
        ("training_file", job.training_file),
        ("validation_file", job.validation_file),
        ("created", when(job.created_at)),
        ("finished", when(job.finished_at) if job.finished_at else None),
        ("took", took),
        ("estimated_finish", when(job.estimated_finish) if job.estimated_finish else None),
        ("trained_tokens", f"{job.trained_tokens:,}" if job.trained_tokens is not None else None),
        ("result_files", job.result_files),
        ("metadata", job.metadata),
        ("error", error),
    ]
    return [(name, _text(value)) for name, value in fields]


def progress(metrics: FineTuningJobEvent | None) -> str | None:
    """``step 120/800 (15%), train_loss 1.2345, valid_loss 1.5000`` from a job's newest metrics event."""
    data = metrics.data if metrics is not None else None
    if not data or not isinstance(data.get("step"), int):
        return None
    step, total = data["step"], data.get("total_steps")
    text = (
        f"step {step}/{total} ({100 * step // total}%)"
        if isinstance(total, int) and total > 0
        else f"step {step}"
    )
    losses = [
        f"{k} {v:.4f}" for k in ("train_loss", "valid_loss") if isinstance(v := data.get(k), int | float)
    ]
    return ", ".join([text, *losses])


def checkpoint_row(ckpt: FineTuningJobCheckpoint) -> tuple[str, ...]:
    """One checkpoint of ``jobs show``: its step, the model id to chat with, its losses."""
    m = ckpt.metrics
    step = ckpt.step_number if ckpt.step_number is not None else m.step
    return (
        _text(step),
        _text(ckpt.fine_tuned_model_checkpoint),
        _text(m.train_loss),
        _text(m.valid_loss),
        _text(m.full_valid_loss),
    )


def event_line(event: FineTuningJobEvent) -> str:
    """``time  level  message`` for one job event."""
    return f"{when(event.created_at)}  {event.level:<5}  {event.message}"


def next_steps(job: FineTuningJob) -> list[str]:
    """What a user can do with the job now, as commands."""
    if job.fine_tuned_model:
        return [f"try it:  ftpipe chat {job.fine_tuned_model}"]
    if job.status == "paused":
        return [f"resume:  ftpipe jobs resume {job.id}"]
    if not job.is_terminal:
        return [f"follow:  ftpipe jobs events {job.id} --follow"]
    return []


def as_json(value: Any) -> str:
    """``--json`` output: a pydantic model (or a list/dict of them) as the API sent it."""
    return json.dumps(_plain(value), indent=2, ensure_ascii=False)


def as_json_line(value: Any) -> str:
    """One compact JSON document per line (``jobs events --json``, so ``--follow`` can be piped)."""
    return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False)


def _plain(value: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def plain_columns(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; nothing cut, so a pipe sees whole ids."""
    table = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table]


@dataclass
class Screen:
    """Prints to ``stream`` (stdout): rich on a terminal, plain text otherwise (and for tables too wide for
    the terminal)."""

    stream: TextIO | None = None

    def __post_init__(self) -> None:
        from rich.console import Console

        self.console = Console(file=self.stream or sys.stdout, highlight=False)
        self.rich = self.console.is_terminal

    def line(self, text: str = "") -> None:
        """One line of text, printed as is (no markup)."""
        self.console.print(text, markup=False, soft_wrap=True)

    def table(self, header: Sequence[str], rows: Iterable[Sequence[str]], title: str | None = None) -> None:
        """A rich table on a terminal wide enough for whole ids, else plain columns (one row per line)."""
        rows = list(rows)
        table = self._rich_table(header, rows, title) if self.rich else None
        if table is None:
            if title:
                self.line(title)
            for text in plain_columns(header, rows):
                self.line(text)
            return
        self.console.print(table)

    def _rich_table(self, header: Sequence[str], rows: list[Sequence[str]], title: str | None) -> Any:
        """The rich table, or None when it would not fit the terminal unwrapped (folded ids and numbers are
        harder to read and copy than plain columns the terminal wraps)."""
        from rich import box
        from rich.measure import Measurement
        from rich.table import Table
        from rich.text import Text

        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
        for name in header:
            t.add_column(name, no_wrap=True)
        for row in rows:
            t.add_row(*(Text(cell) for cell in row))  # Text: a "[...]" in a value is not markup
        unbounded = self.console.options.update_width(1_000_000)
        if Measurement.get(self.console, unbounded, t).maximum > self.console.width:
            return None
        return t

    def fields(self, pairs: Sequence[tuple[str, str]], title: str | None = None) -> None:
        """Field/value pairs, one per line."""
        if not self.rich:
            if title:
                self.line(title)
            width = max(len(name) for name, _ in pairs)
            for name, value in pairs:
                self.line(f"{name.ljust(width)}  {value}")
            return
        from rich.table import Table
        from rich.text import Text

        t = Table(show_header=False, title=title, title_justify="left", box=None)
        t.add_column("field", style="bold")
        t.add_column("value", overflow="fold")
        for name, value in pairs:
            t.add_row(name, Text(value))
        self.console.print(t)


def chat_banner(model: str, base_url: str) -> str:
    """The first line of a conversation: who answers, where, and how to steer it."""
    return f"chatting with {model} at {base_url}; /reset clears the conversation, /exit or Ctrl-D ends it"
