"""Streaming JSONL validator: one pass, binary line by line, constant memory per line."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import orjson

from validation.analysis import StatsAccumulator, analyze_chat, analyze_preference
from validation.fastpath import chat_errors, preference_errors, simple_chat, unpack_simple
from validation.hashlog import HashLog
from validation.results import Issue, Kind, Severity, ValidationReport
from validation.schema_errors import json_type, schema_issues
from validation.sniff import ARRAY_HINT, sniff
from validation.typedlane import simple_chat_line

KindArg = Literal["auto", "chat", "preference"]
DEFAULT_MIN_EXAMPLES = 10
DEFAULT_TOKEN_LIMIT = 4096
DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_ISSUES = 50
_BOM = b"\xef\xbb\xbf"
_BOM_MESSAGE = "file starts with a UTF-8 byte order mark (BOM); save it as UTF-8 without BOM"
_SKIP_CHUNK = 1 << 16
# Declined lines the typed lane may cost before a file where over a quarter of the lines decline drops it.
TYPED_LANE_PATIENCE = 64


class IssueSink:
    """Collects issues: keeps the first ``max_issues`` of each severity, counts all of them."""

    def __init__(self, file: str, max_issues: int) -> None:
        self.file = file
        self.max_issues = max_issues
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []
        self.error_total = 0
        self.warning_total = 0

    @property
    def errors_full(self) -> bool:
        return len(self.errors) >= self.max_issues

    def add(self, line: int, field: str, message: str, severity: Severity = "error") -> None:
        if severity == "error":
            self.error_total += 1
            if len(self.errors) < self.max_issues:
                self.errors.append(Issue(self.file, line, field, message, "error"))
        else:
            self.warning_total += 1
            if len(self.warnings) < self.max_issues:
                self.warnings.append(Issue(self.file, line, field, message, "warning"))

    def replace_line_errors(self, line: int, issue: Issue) -> None:
        """Swap every error of ``line`` for one better-explained file-level ``issue``."""
        kept = [i for i in self.errors if i.line != line]
        self.error_total -= len(self.errors) - len(kept)
        self.errors = [*kept, issue]
        self.error_total += 1

    def count_errors(self, n: int) -> None:
        self.error_total += n


def _detect_kind(obj: dict[str, Any]) -> Kind:
    if "messages" not in obj and (
        "input" in obj or "preferred_output" in obj or "non_preferred_output" in obj
    ):
        return "preference"
    return "chat"


def _json_error(raw: bytes, err: orjson.JSONDecodeError, line_offset: int) -> str:
    """Plain-words reason a line does not parse."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return (
            f"invalid UTF-8 at byte {bad.start} of the line (file offset {line_offset + bad.start}); "
            "save the file as UTF-8"
        )
    text = str(err)
    col = getattr(err, "colno", None)
    if text.startswith("unexpected content after document"):
        return f"trailing data after the JSON object at column {col}; put exactly one object per line"
    return f"invalid JSON: {text[:150]}"


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
    name = str(path)
    sink = IssueSink(name, max_issues)
    acc = StatsAccumulator(token_limit)
    hashes = HashLog()
    resolved: Kind | None = None if kind == "auto" else kind
    lines = nbytes = 0

    def finish(lines: int, nbytes: int) -> tuple[ValidationReport, HashLog]:
        hashes.total_lines = lines
        sink.errors.sort(key=lambda i: i.line)
        sink.warnings.sort(key=lambda i: i.line)
        report = ValidationReport(
            name,
            resolved,
            sink.errors,
            sink.warnings,
            sink.error_total,
            sink.warning_total,
            acc.freeze(lines=lines, nbytes=nbytes, n_epochs=n_epochs),
            max_issues,
        )
        return report, hashes

    try:
        f = Path(path).open("rb")  # noqa: SIM115 - closed below; the loop is long
    except OSError as exc:
        sink.add(0, "$", f"cannot open file: {exc.strerror or exc}")
        return finish(lines, nbytes)
    with f:
        head = f.read(1024)
        reason = sniff(head)
        if reason is not None:
            sink.add(0, "$", reason)
            return finish(lines, nbytes)
        f.seek(0)

        check: Callable[[object], list[str]] | None = None
        analyze: Callable[[dict[str, Any], StatsAccumulator], list[tuple[str, str]]] | None = None
        if resolved is not None:
            check = chat_errors if resolved == "chat" else preference_errors
            analyze = analyze_chat if resolved == "chat" else analyze_preference
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        hash_append = hashes.hashes.append
        # Lines that leave the fast lane are noted (rare), so the hashes need no line numbers beside them.
        slow_append = hashes.slow.append
        slow_hashed_append = hashes.slow_hashed.append
        simple: Callable[[object], tuple[int, int] | None] | None = (
            simple_chat if resolved == "chat" else None
        )
        simple_line: Callable[[bytes], tuple[int, int] | None] | None = (
            simple_chat_line if resolved == "chat" else None
        )
        s_total = s_max = 0  # s_total: sum of the fast lane's packed simple_chat counts
        s_min = 1 << 62
        s_tokens = 0
        declined = 0  # lines the typed lane declined
        readline = f.readline
        tell = f.tell  # byte offsets come from the file position: no running byte count per line
        limit = max_line_bytes + 2  # room for "\r\n"
        plain_max = max_line_bytes + 1  # a plain line's length with its "\n"
        blank_lines = 0
        crlf_seen = False
        first_line_list = False
        kind_checked = False

        # iter() + enumerate() read and number the lines in C; readline's limit bounds the memory per line.
        for lines, raw in enumerate(iter(partial(readline, limit), b""), 1):
            # Plain line: ends in "}\n" (so not blank, not CRLF) within plain_max bytes (a longer read has
            # no "\n" before its end); one C call decides it. orjson ignores the trailing newline, so the
            # line is parsed and hashed as read, without a copy.
            if raw.endswith(b"}\n", 0, plain_max):
                if simple_line is not None:
                    # Typed decoding in C: the common chat shape without building dicts (the orjson path
                    # below gives the same answer, and the exact error text, for whatever this declines).
                    got = simple_line(raw)
                    if got is not None:
                        packed, tokens = got
                        if tokens <= s_max or tokens <= token_limit:  # same tally as the lane below
                            s_total += packed
                            s_tokens += tokens
                            if tokens > s_max:
                                s_max = tokens
                            if tokens < s_min:
                                s_min = tokens
                            hash_append(hash(raw))
                            continue
                    else:
                        declined += 1
                        # A declined line costs a failed typed decode (~1.5 us, mostly msgspec's error
                        # text) on top of the orjson path: in files mostly off the simple shape, stop trying.
                        if declined > TYPED_LANE_PATIENCE and declined * 4 > lines:
                            simple_line = None
                body = raw
                try:
                    obj = loads(raw)
                except decode_error as err:
                    if lines != 1 or not raw.startswith(_BOM):
                        slow_append(lines)
                        sink.add(lines, "$", _json_error(raw, err, tell() - len(raw)))
                        continue
                    sink.add(1, "$", _BOM_MESSAGE)
                    body = raw[3:]
                    try:
                        obj = loads(body)
                    except decode_error as err2:
                        slow_append(lines)
                        sink.add(lines, "$", _json_error(body, err2, tell() - len(raw)))
                        continue
            else:
                n = len(raw)
                # Measure without the line terminator; note CRLF once.
                body = raw
                if raw[-1] == 10:
                    end = n - 1
                    if end and raw[end - 1] == 13:
                        end -= 1
                        if not crlf_seen:
                            crlf_seen = True
                            sink.add(
                                lines,
                                "$",
                                "file uses Windows (CRLF) line endings; accepted, but LF is preferred",
                                "warning",
                            )
                        body = raw[:end] + b"\n"  # hash CRLF and LF copies of an example alike
                else:
                    end = n
                    body = raw + b"\n"  # last line without a newline: hash it like the others
                if end > max_line_bytes:
                    if n == limit and raw[-1] != 10:
                        # Skip the rest of an over-long line without holding it in memory.
                        while True:
                            chunk = readline(_SKIP_CHUNK)
                            end += len(chunk)
                            if not chunk or chunk[-1] == 10:
                                break
                    slow_append(lines)
                    sink.add(
                        lines, "$", f"line is longer than {max_line_bytes} bytes (at least {end}); not parsed"
                    )
                    continue
                if raw[0] != 123 and raw.isspace():
                    blank_lines += 1
                    slow_append(lines)
                    sink.add(lines, "$", "blank line; remove empty lines (the API rejects them)")
                    continue
                if lines == 1 and body.startswith(_BOM):
                    sink.add(1, "$", _BOM_MESSAGE)
                    body = body[3:]
                try:
                    obj = loads(body)
                except decode_error as err:
                    slow_append(lines)
                    sink.add(lines, "$", _json_error(body, err, tell() - n))
                    continue
            if simple is not None:
                got = simple(obj)
                if got is not None:
                    packed, tokens = got
                    # Fast lane: valid, warning-free chat example, tallied in one int. The token limit
                    # is checked only when the maximum grows (s_max never exceeds the limit).
                    if tokens <= s_max or tokens <= token_limit:
                        s_total += packed
                        s_tokens += tokens
                        if tokens > s_max:
                            s_max = tokens
                        if tokens < s_min:
                            s_min = tokens
                        hash_append(hash(body))
                        continue
            slow_append(lines)  # the general path: hashed below only if valid
            if check is None or analyze is None:
                if type(obj) is not dict:
                    first_line_list = lines == 1 and type(obj) is list
                    sink.add(lines, "$", f"each line must be a JSON object {{...}}, got {json_type(obj)}")
                    continue
                resolved = _detect_kind(obj)
                kind_checked = True
                check = chat_errors if resolved == "chat" else preference_errors
                analyze = analyze_chat if resolved == "chat" else analyze_preference
                simple = simple_chat if resolved == "chat" else None
                simple_line = simple_chat_line if resolved == "chat" else None
            if not kind_checked:
                kind_checked = True
                looks = _detect_kind(obj) if type(obj) is dict else resolved
                if looks != resolved:
                    sink.add(
                        0,
                        "$",
                        f"expected {resolved} examples, but line {lines} is in {looks} format; "
                        f"pass kind={looks!r} or fix the file",
                    )
                    nbytes = tell()
                    return finish(lines, nbytes)
            bad = check(obj)
            if bad:
                if sink.errors_full:
                    sink.count_errors(len(bad))
                    continue
                found = schema_issues(obj, resolved or "chat")
                if not found:  # fast path and schema disagree (a bug): still report, never pass silently
                    found = [(field, "does not match the schema") for field in bad]
                for field, message in found:
                    sink.add(lines, field, message)
                continue
            hash_append(hash(body))
            slow_hashed_append(lines)
            warnings = analyze(obj, acc)
            if warnings:
                for field, message in warnings:
                    sink.add(lines, field, message, "warning")

        nbytes = tell()
        hashes.total_lines = lines
        data_lines = lines - blank_lines  # over-long lines count: they are examples we could not read
        fast = unpack_simple(s_total)
        acc.merge_fast(
            examples=fast.examples,
            tokens=s_tokens,
            min_tokens=s_min,
            max_tokens=s_max,
            roles={
                "system": fast.system,
                "developer": fast.developer,
                "user": fast.user,
                "assistant": fast.assistant,
            },
            with_system=fast.with_system,
            multi_turn=fast.multi_turn,
        )

    if nbytes == 0:
        sink.add(0, "$", "file is empty")
    elif data_lines == 0:
        sink.add(0, "$", "file has no examples (only blank lines)")
    elif first_line_list and lines == 1:
        sink.replace_line_errors(1, Issue(name, 0, "$", ARRAY_HINT, "error"))
    elif data_lines < min_examples:
        sink.add(
            0, "$", f"only {data_lines} examples; at least {min_examples} are required (50-100 recommended)"
        )
    for line, first in hashes.duplicates():
        sink.add(line, "$", f"duplicate of line {first}", "warning")
    return finish(lines, nbytes)
