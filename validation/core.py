"""Streaming JSONL validator: one pass, binary line by line, constant memory per line.

Each line goes through lanes (``validation.lanes``), cheapest first, until one settles it:
1. typed: a plain line of a chat file decoded from bytes into typed structs, for the common shape;
2. simple: the same shape checked on the dict orjson parsed (``LineDecoder`` reports framing problems);
3. general: kind detection, the schema check with exact messages, statistics and warnings.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import BinaryIO, Literal

from validation.analysis import StatsAccumulator
from validation.fastpath import simple_chat
from validation.hashlog import HashLog
from validation.lanes import GeneralLane, IssueSink, LineDecoder, SimpleLane, SimpleTally, TypedLane
from validation.results import Issue, Kind, ValidationReport
from validation.sniff import ARRAY_HINT, sniff
from validation.typedlane import simple_chat_line

KindArg = Literal["auto", "chat", "preference"]
DEFAULT_MIN_EXAMPLES = 10
DEFAULT_TOKEN_LIMIT = 4096
DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_ISSUES = 50
# Declined lines the typed lane may cost before a file where over a quarter of the lines decline drops it.
TYPED_LANE_PATIENCE = 64


def validate_file(
    path: str | os.PathLike[str],
    kind: KindArg = "auto",
    *,
    min_examples: int = DEFAULT_MIN_EXAMPLES,
    token_limit: int = DEFAULT_TOKEN_LIMIT,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_issues: int = DEFAULT_MAX_ISSUES,
    n_epochs: int = 3,
) -> ValidationReport:
    """Validate one JSONL fine-tuning file (chat or preference) and collect its statistics."""
    report, _ = validate_file_with_hashes(
        path,
        kind,
        min_examples=min_examples,
        token_limit=token_limit,
        max_line_bytes=max_line_bytes,
        max_issues=max_issues,
        n_epochs=n_epochs,
    )
    return report


def validate_file_with_hashes(
    path: str | os.PathLike[str],
    kind: KindArg = "auto",
    *,
    min_examples: int = DEFAULT_MIN_EXAMPLES,
    token_limit: int = DEFAULT_TOKEN_LIMIT,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_issues: int = DEFAULT_MAX_ISSUES,
    n_epochs: int = 3,
) -> tuple[ValidationReport, HashLog]:
    """``validate_file`` plus the per-example hash log used for the train/validation overlap check."""
    if kind not in ("auto", "chat", "preference"):
        raise ValueError(f"kind must be 'auto', 'chat' or 'preference', got {kind!r}")
    scan = _FileScan(str(path), None if kind == "auto" else kind, token_limit, max_issues, max_line_bytes)
    try:
        f = Path(path).open("rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        scan.sink.add(0, "$", f"cannot open file: {exc.strerror or exc}")
        return scan.finish(n_epochs)
    with f:
        reason = sniff(f.read(1024))
        if reason is not None:
            scan.sink.add(0, "$", reason)
            return scan.finish(n_epochs)
        f.seek(0)
        if not scan.read(f):
            return scan.finish(n_epochs)  # the file is of the other kind: reported, nothing more to check
    scan.check_file(min_examples)
    return scan.finish(n_epochs)


class _FileScan:
    """One file's validation: the lanes, what they share, and the checks over the whole file."""

    def __init__(self, name: str, kind: Kind | None, token_limit: int, max_issues: int, max_line_bytes: int):
        self.name = name
        self.max_line_bytes = max_line_bytes
        self.sink = IssueSink(name, max_issues)
        self.acc = StatsAccumulator(token_limit)
        self.hashes = HashLog()
        self.tally = SimpleTally(token_limit)
        self.plain_max = max_line_bytes + 1  # a plain line's length with its "\n"
        self.typed = TypedLane(self.tally, self.hashes, self.plain_max, TYPED_LANE_PATIENCE)
        self.simple = SimpleLane(self.tally, self.hashes)
        self.general = GeneralLane(kind, self.sink, self.acc, self.hashes, self._use_kind)
        self.lines = self.nbytes = self.blank_lines = 0

    def _use_kind(self, kind: Kind) -> None:
        # Only chat has a fast shape; both fast lanes wait until the file is known to be chat.
        self.typed.decode = simple_chat_line if kind == "chat" else None
        self.simple.check = simple_chat if kind == "chat" else None

    def read(self, f: BinaryIO) -> bool:
        """Validate every line; False when the file is of the other kind than it is checked as (reported)."""
        typed, simple, general, plain_max = self.typed, self.simple, self.general, self.plain_max
        decoder = LineDecoder(self.sink, self.hashes, f, self.max_line_bytes)
        # iter() + enumerate() read and number the lines in C; readline's limit (room for "\r\n") bounds the
        # memory per line.
        lines = enumerate(iter(partial(f.readline, self.max_line_bytes + 2), b""), 1)
        settled, lineno = True, 0
        for line in lines:
            if typed.decode is not None and line[1].endswith(b"}\n", 0, plain_max):
                unsettled = typed.settle(line, lines)  # this line and the ones after it, while it can
                if unsettled is None:
                    break
                line = unsettled
            lineno, raw = line
            parsed = decoder.decode(lineno, raw, raw.endswith(b"}\n", 0, plain_max))
            if parsed is None or (simple.check is not None and simple.settle(*parsed)):
                continue
            settled = general.settle(lineno, *parsed)
            if not settled:
                break
        self.lines = max(lineno, typed.lineno)  # the last line read went to the main loop or the typed lane
        self.nbytes = f.tell()
        self.blank_lines = decoder.blank_lines
        if settled:
            self.tally.merge_into(self.acc)
        return settled

    def check_file(self, min_examples: int) -> None:
        """Checks over the whole file: empty, too few examples, one JSON array, duplicates."""
        data_lines = self.lines - self.blank_lines  # over-long lines count: examples we could not read
        sink = self.sink
        if self.nbytes == 0:
            sink.add(0, "$", "file is empty")
        elif data_lines == 0:
            sink.add(0, "$", "file has no examples (only blank lines)")
        elif self.general.first_line_list and self.lines == 1:
            sink.replace_line_errors(1, Issue(self.name, 0, "$", ARRAY_HINT, "error"))
        elif data_lines < min_examples:
            message = f"only {data_lines} examples; at least {min_examples} are required (50-100 recommended)"
            sink.add(0, "$", message)
        self.hashes.total_lines = self.lines
        for line, first in self.hashes.duplicates():
            sink.add(line, "$", f"duplicate of line {first}", "warning")

    def finish(self, n_epochs: int) -> tuple[ValidationReport, HashLog]:
        """The report (issues in line order) and the hash log for the overlap check."""
        self.hashes.total_lines = self.lines
        sink = self.sink
        sink.errors.sort(key=lambda i: i.line)
        sink.warnings.sort(key=lambda i: i.line)
        stats = self.acc.freeze(lines=self.lines, nbytes=self.nbytes, n_epochs=n_epochs)
        report = ValidationReport(
            self.name,
            self.general.kind,
            sink.errors,
            sink.warnings,
            sink.error_total,
            sink.warning_total,
            stats,
            sink.max_issues,
        )
        return report, self.hashes
