"""The typed (msgspec) fast lane must answer exactly what the orjson lane answers, line by line and per file."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from vpaths import BAD, SAMPLE_FILES, WARN

import validation.core as core
from validation.core import validate_file_with_hashes
from validation.fastpath import MAX_SIMPLE_MESSAGES, simple_chat
from validation.typedlane import simple_chat_line

ROLES = ["system", "developer", "user", "assistant", "tool", "bot", "Assistant", ""]
TEXTS = [
    "a",
    "hello there",
    "",
    " ",
    "\t\n",
    "\u00a0",
    "\u2028",
    "\x1c",
    " x ",
    "\u00e9t\u00e9",
    "\U0001f600",
    "\x00",
]
ODD = [None, True, 0, 1, 1.5, [], {}, ["a"], {"a": "b"}, "x", "assistant"]


def _orjson_lane(raw: bytes) -> tuple[int, int] | None:
    """The reference: what the validator's orjson lane decides for one line."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return simple_chat(obj)


def _assert_same(raw: bytes) -> None:
    assert simple_chat_line(raw) == _orjson_lane(raw), raw[:300]


def _corpus_lines() -> Iterator[bytes]:
    for path in [*(p for d in (BAD, WARN) for p in sorted(d.glob("*.jsonl"))), *SAMPLE_FILES]:
        with path.open("rb") as f:
            yield from f


def _example(rng: random.Random) -> dict[str, Any]:
    msgs = [
        {"role": rng.choice(["system", "developer", "user", "assistant"]), "content": rng.choice(TEXTS[:2])}
        for _ in range(rng.randint(0, 4))
    ]
    msgs.append({"role": "assistant", "content": rng.choice(["ok", "sure \u00e9", "x" * rng.randint(1, 40)])})
    return {"messages": msgs}


def _mutate(obj: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One change aimed at the edges of the simple shape (roles, blank text, keys, types, counts)."""
    obj = copy.deepcopy(obj)
    msgs = obj.get("messages")
    if not isinstance(msgs, list) or not msgs:  # an earlier change broke the list: change the top level
        obj[rng.choice(["messages", "extra"])] = rng.choice([*ODD, [{"role": "assistant", "content": "a"}]])
        return obj
    m = rng.choice(msgs)
    action = rng.randrange(9)
    if not isinstance(m, dict) and action < 5:  # message-level changes need a message: restore one first
        m = {"role": "assistant", "content": "a"}
        msgs[-1] = m
    if action == 0:
        m["role"] = rng.choice(ROLES)
    elif action == 1:
        m["content"] = rng.choice(TEXTS)
    elif action == 2:
        m[rng.choice(["weight", "name", "tool_calls", "extra"])] = rng.choice(ODD)
    elif action == 3:
        m.pop(rng.choice(["role", "content"]), None)
    elif action == 4:
        m[rng.choice(["role", "content"])] = rng.choice(ODD)
    elif action == 5:
        obj[rng.choice(["tools", "extra", "parallel_tool_calls"])] = rng.choice(ODD)
    elif action == 6:
        obj["messages"] = [] if rng.random() < 0.3 else rng.choice(ODD)
    elif action == 7:
        msgs[rng.randrange(len(msgs))] = rng.choice(ODD)
    else:  # around the 127-message cap of the packed role counts
        n = MAX_SIMPLE_MESSAGES + rng.choice((-1, 0, 1))
        obj["messages"] = [
            *([{"role": "user", "content": "q"}] * (n - 1)),
            {"role": "assistant", "content": "a"},
        ]
    return obj


def _serialize(obj: Any, rng: random.Random) -> bytes:
    """JSON text of ``obj`` in varied but valid spellings (spacing, \\u escapes, key order)."""
    if rng.random() < 0.3:
        return json.dumps(obj, ensure_ascii=True, indent=None, separators=(" , ", " : ")).encode() + b"\n"
    if rng.random() < 0.2 and isinstance(obj, dict):
        obj = dict(reversed(list(obj.items())))
    return orjson.dumps(obj) + b"\n"


BYTE_EDITS: list[bytes] = [
    b"\xff",
    b"\xed\xa0\x80",
    b"\\ud800",
    b"\\udc00\\ud800",
    b"\\ud83d\\ude00",
    b"\t",
    b"\x00",
    b"\\u0000",
    b" ",
    b",",
    b"}",
    b"]",
    b'"',
    b"\\",
    b"\xef\xbb\xbf",
    b'"role":"user",',
    b'"content":"x",',
    b'"content":5,',
    b'"messages":[],',
]


def _byte_mutant(raw: bytes, rng: random.Random) -> bytes:
    """Insert, replace or delete a few bytes anywhere (duplicate keys, bad UTF-8, escapes, truncation)."""
    body = bytearray(raw.rstrip(b"\n"))
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(body) + 1)
        action = rng.random()
        if action < 0.6:
            body[i:i] = rng.choice(BYTE_EDITS)
        elif action < 0.8 and i < len(body):
            body[i : i + 1] = rng.choice(BYTE_EDITS)
        else:
            del body[i : i + rng.randint(1, 3)]
    return bytes(body) + b"\n"


def test_typed_lane_matches_orjson_lane_on_corpus() -> None:
    n = 0
    for raw in _corpus_lines():
        _assert_same(raw)
        n += 1
    assert n > 100


def test_typed_lane_matches_orjson_lane_on_mutations() -> None:
    rng = random.Random(4321)
    accepted = declined = 0
    for _ in range(3000):
        obj = _example(rng)
        for _ in range(rng.choice((0, 0, 1, 1, 2))):
            obj = _mutate(obj, rng)
        raw = _serialize(obj, rng)
        if rng.random() < 0.4:
            raw = _byte_mutant(raw, rng)
        _assert_same(raw)
        if simple_chat_line(raw) is None:
            declined += 1
        else:
            accepted += 1
    assert accepted > 300 and declined > 300  # both outcomes exercised


def test_typed_lane_keeps_the_last_of_duplicate_keys_like_orjson() -> None:
    dup = b'{"messages":[{"role":"user","content":"q","role":"assistant"}]}\n'
    assert simple_chat_line(dup) == _orjson_lane(dup) is not None
    dup_blank = b'{"messages":[{"role":"assistant","content":"a","content":" "}]}\n'
    assert simple_chat_line(dup_blank) is None is _orjson_lane(dup_blank)


def _mixed_file(path: Path, rng: random.Random) -> None:
    """A chat file mixing fast-lane lines with every kind of line that leaves it."""
    lines: list[bytes] = []
    for i in range(rng.randint(5, 60)):
        r = rng.random()
        if r < 0.5:
            raw = _serialize(_example(rng), rng)
        elif r < 0.7:
            raw = _serialize(_mutate(_example(rng), rng), rng)
        elif r < 0.8:
            raw = _byte_mutant(_serialize(_example(rng), rng), rng)
        elif r < 0.85 and lines:
            raw = rng.choice(lines)  # duplicate
        elif r < 0.9:
            raw = b"\n"
        elif r < 0.95:
            raw = _serialize(_example(rng), rng).replace(b"\n", b"\r\n")
        else:
            raw = (
                orjson.dumps({"messages": [{"role": "assistant", "content": "x" * rng.randint(50, 400)}]})
                + b"\n"
            )
        if i == 0 and rng.random() < 0.1:
            raw = b"\xef\xbb\xbf" + raw
        lines.append(raw)
    data = b"".join(lines)
    if rng.random() < 0.2:
        data = data.rstrip(b"\n")  # last line without a newline
    path.write_bytes(data)


def _report_and_log(path: Path, kind: str) -> tuple[Any, ...]:
    report, log = validate_file_with_hashes(path, kind, token_limit=60, min_examples=3)  # type: ignore[arg-type]
    return report, list(log.hashes), log.line_numbers().tolist(), log.duplicates()


@pytest.mark.parametrize(("kind", "patience"), [("auto", 64), ("chat", 64), ("chat", 3)])
def test_reports_identical_with_and_without_typed_lane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, patience: int
) -> None:
    rng = random.Random(99 if kind == "auto" else 7)
    paths = [*(p for d in (BAD, WARN) for p in sorted(d.glob("*.jsonl"))), *SAMPLE_FILES]
    for i in range(60):
        p = tmp_path / f"mixed{i}.jsonl"
        _mixed_file(p, rng)
        paths.append(p)
    calls = accepted = 0

    def counting(raw: bytes) -> tuple[int, int] | None:
        nonlocal calls, accepted
        got = simple_chat_line(raw)
        calls += 1
        accepted += got is not None
        return got

    monkeypatch.setattr(core, "simple_chat_line", counting)
    if patience < 64:  # how many lines the lane sees when it is never dropped
        monkeypatch.setattr(core, "TYPED_LANE_PATIENCE", 10**9)
        for p in paths:
            _report_and_log(p, kind)
        undropped, calls, accepted = calls, 0, 0
    monkeypatch.setattr(core, "TYPED_LANE_PATIENCE", patience)
    with_lane = [_report_and_log(p, kind) for p in paths]
    assert accepted > 300  # the typed lane really ran
    if patience < 64:
        assert calls < undropped  # and was dropped in files where many lines decline
    monkeypatch.setattr(core, "simple_chat_line", lambda raw: None)  # the orjson lane alone, as before
    without = [_report_and_log(p, kind) for p in paths]
    for p, a, b in zip(paths, with_lane, without, strict=True):
        assert a == b, p.name
