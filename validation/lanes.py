"""The validator's lanes: each settles a line or passes it on, cheapest first (see ``validation.core``).

Every lane answers one question with a bool, "did I settle this line?" (counted it, or reported what is
wrong with it); on False the next lane takes the line. The two fast lanes count what they accept in one
``SimpleTally``; the general lane counts into the ``StatsAccumulator`` and reports through the ``IssueSink``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import chain
from typing import Any, BinaryIO

import orjson

from validation.analysis import StatsAccumulator, analyze_chat, analyze_preference
from validation.fastpath import chat_errors, preference_errors, unpack_simple
from validation.hashlog import HashLog
from validation.results import Issue, Kind, Severity
from validation.schema_errors import json_type, schema_issues

Simple = tuple[int, int]  # a simple chat example: (its counts packed into one int, its tokens)
Decoded = tuple[Any, bytes]  # a parsed line and the bytes its hash is taken of
_BOM = b"\xef\xbb\xbf"
_BOM_MESSAGE = "file starts with a UTF-8 byte order mark (BOM); save it as UTF-8 without BOM"
_CRLF_MESSAGE = "file uses Windows (CRLF) line endings; accepted, but LF is preferred"
_SKIP_CHUNK = 1 << 16


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


class SimpleTally:
    """The fast lanes' one tally of simple chat examples within the token limit, counted in a few ints."""

    __slots__ = ("max_tokens", "min_tokens", "packed", "token_limit", "tokens")

    def __init__(self, token_limit: int) -> None:
        self.token_limit = token_limit
        self.packed = self.tokens = self.max_tokens = 0  # packed: the sum of the examples' packed counts
        self.min_tokens = 1 << 62

    def add(self, packed: int, tokens: int, min_tokens: int, max_tokens: int) -> None:
        """Count examples: their packed counts and tokens summed, the smallest and largest token count."""
        self.packed += packed
        self.tokens += tokens
        self.min_tokens = min(self.min_tokens, min_tokens)
        self.max_tokens = max(self.max_tokens, max_tokens)

    def merge_into(self, acc: StatsAccumulator) -> None:
        """Fold the tally into the statistics of the examples the general lane counted."""
        fast = unpack_simple(self.packed)
        acc.merge_fast(
            examples=fast.examples,
            tokens=self.tokens,
            min_tokens=self.min_tokens,
            max_tokens=self.max_tokens,
            roles={
                "system": fast.system,
                "developer": fast.developer,
                "user": fast.user,
                "assistant": fast.assistant,
            },
            with_system=fast.with_system,
            multi_turn=fast.multi_turn,
        )


Line = tuple[int, bytes]  # (1-based line number, the line's bytes as read)


class TypedLane:
    """Lane 1, for plain lines of a chat file (ending in "}\\n" within the length limit): decoded from bytes
    into typed structs in C, no dicts built (``validation.typedlane``).

    ``settle`` takes a run of lines, counting in locals, and hands back the first one it cannot settle: a
    call per run, not per line, is what keeps the common file at orjson's pace. A declined line costs a
    failed decode on top of the orjson path, so in a file where over a quarter of the lines decline the
    lane stops trying once ``patience`` lines have declined.
    """

    __slots__ = ("decline_count", "decode", "hashes", "lineno", "patience", "plain_max", "tally")

    def __init__(self, tally: SimpleTally, hashes: HashLog, plain_max: int, patience: int) -> None:
        self.tally = tally
        self.hashes = hashes
        self.plain_max = plain_max
        self.patience = patience
        self.decode: Callable[[bytes], Simple | None] | None = None  # set once the file is known to be chat
        self.decline_count = 0
        self.lineno = 0  # the last line it took

    def settle(self, first: Line, lines: Iterator[Line]) -> Line | None:
        """Settle ``first`` and the lines after it while it can; the first line it cannot, None at the end."""
        decode = self.decode
        assert decode is not None
        limit, plain_max, hash_append = self.tally.token_limit, self.plain_max, self.hashes.hashes.append
        packed = tokens = max_tokens = 0
        min_tokens = 1 << 62
        unsettled: Line | None = None
        lineno = first[0]
        for lineno, raw in chain((first,), lines):
            if raw.endswith(b"}\n", 0, plain_max):
                got = decode(raw)
                if got is None:
                    self._declined(lineno)
                else:
                    example, n_tokens = got
                    if n_tokens <= limit:
                        packed += example
                        tokens += n_tokens
                        if n_tokens > max_tokens:
                            max_tokens = n_tokens
                        if n_tokens < min_tokens:
                            min_tokens = n_tokens
                        hash_append(hash(raw))
                        continue
            unsettled = (lineno, raw)
            break
        self.lineno = lineno
        if packed:
            self.tally.add(packed, tokens, min_tokens, max_tokens)
        return unsettled

    def _declined(self, lineno: int) -> None:
        self.decline_count += 1
        if self.decline_count > self.patience and self.decline_count * 4 > lineno:
            self.decode = None


class SimpleLane:
    """Lane 2, for parsed lines of a chat file: the same common shape checked on the dict (``simple_chat``)."""

    __slots__ = ("_hash_append", "check", "tally")

    def __init__(self, tally: SimpleTally, hashes: HashLog) -> None:
        self.tally = tally
        self._hash_append = hashes.hashes.append
        self.check: Callable[[object], Simple | None] | None = None  # set once the file is known to be chat

    def settle(self, obj: object, body: bytes) -> bool:
        check = self.check
        got = None if check is None else check(obj)
        if got is None:
            return False
        example, n_tokens = got
        if n_tokens > self.tally.token_limit:
            return False
        self.tally.add(example, n_tokens, n_tokens, n_tokens)
        self._hash_append(hash(body))
        return True


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


class LineDecoder:
    """Parses a line the typed lane did not settle, reporting what is wrong with its framing: invalid JSON
    or UTF-8, a BOM, CRLF endings (once), over-long and blank lines.

    Returns the parsed value and the bytes to hash (CRLF and LF copies of an example hash alike), or None
    when the line was reported. Reported lines are noted in the hash log as having left the fast lanes.
    """

    def __init__(self, sink: IssueSink, hashes: HashLog, f: BinaryIO, max_line_bytes: int) -> None:
        self.sink = sink
        self._slow_append = hashes.slow.append
        self._readline = f.readline
        self._tell = f.tell  # byte offsets come from the file position: no running byte count per line
        self.max_line_bytes = max_line_bytes
        self.blank_lines = 0
        self.crlf_seen = False

    def _reject(self, lineno: int, message: str) -> None:
        self._slow_append(lineno)
        self.sink.add(lineno, "$", message)

    def decode(self, lineno: int, raw: bytes, plain: bool) -> Decoded | None:
        if plain:  # ends in "}\n" within the length limit: orjson ignores the newline, no copy needed
            try:
                return orjson.loads(raw), raw
            except orjson.JSONDecodeError as err:
                if lineno != 1 or not raw.startswith(_BOM):
                    self._reject(lineno, _json_error(raw, err, self._tell() - len(raw)))
                    return None
            self.sink.add(1, "$", _BOM_MESSAGE)
            return self._loads(lineno, raw[3:], len(raw))
        n = len(raw)
        body = raw
        # Measure without the line terminator; note CRLF once.
        if raw[-1] == 10:
            end = n - 1
            if end and raw[end - 1] == 13:
                end -= 1
                if not self.crlf_seen:
                    self.crlf_seen = True
                    self.sink.add(lineno, "$", _CRLF_MESSAGE, "warning")
                body = raw[:end] + b"\n"
        else:
            end = n
            body = raw + b"\n"  # last line without a newline: hash it like the others
        if end > self.max_line_bytes:
            if raw[-1] != 10 and n == self.max_line_bytes + 2:
                end += self._skip_rest()
            self._reject(
                lineno, f"line is longer than {self.max_line_bytes} bytes (at least {end}); not parsed"
            )
            return None
        if raw[0] != 123 and raw.isspace():
            self.blank_lines += 1
            self._reject(lineno, "blank line; remove empty lines (the API rejects them)")
            return None
        if lineno == 1 and body.startswith(_BOM):
            self.sink.add(1, "$", _BOM_MESSAGE)
            body = body[3:]
        return self._loads(lineno, body, n)

    def _loads(self, lineno: int, body: bytes, n: int) -> Decoded | None:
        try:
            return orjson.loads(body), body
        except orjson.JSONDecodeError as err:
            self._reject(lineno, _json_error(body, err, self._tell() - n))
            return None

    def _skip_rest(self) -> int:
        """Read past the rest of an over-long line without holding it in memory; the bytes skipped."""
        skipped = 0
        while True:
            chunk = self._readline(_SKIP_CHUNK)
            skipped += len(chunk)
            if not chunk or chunk[-1] == 10:
                return skipped


def detect_kind(obj: dict[str, Any]) -> Kind:
    """The kind an example looks like: preference when it has a preference key and no ``messages``."""
    if "messages" not in obj and (
        "input" in obj or "preferred_output" in obj or "non_preferred_output" in obj
    ):
        return "preference"
    return "chat"


class GeneralLane:
    """Lane 3, for every line the others passed on: the kind (detected from the first object when not given),
    the structural check with the schema's exact messages, then statistics and semantic warnings.

    Settles every line but one: the first line it sees in a file checked as an explicit kind that is of the
    other kind (reported; the caller stops reading, as nothing after it would be checked as meant).
    """

    def __init__(
        self,
        kind: Kind | None,
        sink: IssueSink,
        acc: StatsAccumulator,
        hashes: HashLog,
        on_kind: Callable[[Kind], None],
    ) -> None:
        self.sink = sink
        self.acc = acc
        self._hash_append = hashes.hashes.append
        self._slow_append = hashes.slow.append
        self._slow_hashed_append = hashes.slow_hashed.append
        self._on_kind = on_kind
        self.kind: Kind | None = None
        self.kind_checked = False  # an explicit kind is checked against the first line that gets here
        self.first_line_list = False  # line 1 is a JSON array (with a one-line file: the array hint)
        self._check: Callable[[object], list[str]] = chat_errors
        self._analyze: Callable[[dict[str, Any], StatsAccumulator], list[tuple[str, str]]] = analyze_chat
        if kind is not None:
            self._use(kind)

    def _use(self, kind: Kind) -> None:
        self.kind = kind
        self._check = chat_errors if kind == "chat" else preference_errors
        self._analyze = analyze_chat if kind == "chat" else analyze_preference
        self._on_kind(kind)

    def settle(self, lineno: int, obj: Any, body: bytes) -> bool:
        self._slow_append(lineno)  # hashed below only if valid
        sink = self.sink
        if self.kind is None:
            if type(obj) is not dict:
                self.first_line_list = lineno == 1 and type(obj) is list
                sink.add(lineno, "$", f"each line must be a JSON object {{...}}, got {json_type(obj)}")
                return True
            self.kind_checked = True
            self._use(detect_kind(obj))
        if not self.kind_checked:
            self.kind_checked = True
            looks = detect_kind(obj) if type(obj) is dict else self.kind
            if looks != self.kind:
                # No remedy named here: each front end names its own (CLI flag, job method).
                message = f"expected {self.kind} examples, but line {lineno} is in {looks} format"
                sink.add(0, "$", message)
                return False
        bad = self._check(obj)
        if bad:
            if sink.errors_full:
                sink.count_errors(len(bad))
                return True
            # The fast check and the schema disagreeing is a bug: still report, never pass silently.
            found = schema_issues(obj, self.kind or "chat") or [(f, "does not match the schema") for f in bad]
            for field, message in found:
                sink.add(lineno, field, message)
            return True
        self._hash_append(hash(body))
        self._slow_hashed_append(lineno)
        for field, message in self._analyze(obj, self.acc):
            sink.add(lineno, field, message, "warning")
        return True
