"""Streaming: memory stays bounded by the per-example hash log, never by the file size (no timing here)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import orjson

from validation import validate_file

MIB = 1024 * 1024


def test_200k_line_file_streams_in_small_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("wb") as f:
        for i in range(200_000):
            ex = {
                "messages": [
                    {"role": "user", "content": f"Where is order A-{i}? " + "please " * 10},
                    {"role": "assistant", "content": f"Hi there! Order A-{i} ships today. " * 2},
                ]
            }
            f.write(orjson.dumps(ex) + b"\n")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        report = validate_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.stats.examples == 200_000
    assert size > 30 * MIB
    # 16 bytes per example for duplicate detection (3.2 MiB here) plus small constant overhead.
    assert peak < 12 * MIB, peak


def test_over_long_line_is_skipped_without_being_held(tmp_path: Path) -> None:
    good = b"".join(
        orjson.dumps(
            {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        )
        + b"\n"
        for i in range(12)
    )
    huge = b'{"messages": [{"role": "user", "content": "' + b"x" * (8 * MIB) + b'"}]}\n'
    path = tmp_path / "long.jsonl"
    path.write_bytes(good + huge + good.replace(b"q", b"r"))
    tracemalloc.start()
    try:
        report = validate_file(path, max_line_bytes=64 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(e.line, e.field) for e in report.errors] == [(13, "$")]
    assert "longer than 65536 bytes" in report.errors[0].message
    assert report.stats.examples == 24 and report.stats.lines == 25
    assert peak < 2 * MIB, peak


def test_default_line_limit(tmp_path: Path) -> None:
    good = b"".join(
        orjson.dumps(
            {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        )
        + b"\n"
        for i in range(10)
    )
    path = tmp_path / "long.jsonl"
    path.write_bytes(good + b'{"messages": "' + b"y" * (5 * MIB) + b'"}')  # last line, no newline
    report = validate_file(path)
    assert [(e.line, e.field) for e in report.errors] == [(11, "$")]
    assert "longer than 4194304 bytes" in report.errors[0].message
