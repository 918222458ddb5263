"""Fixtures for the pipeline tests: one Prefect test harness per session, fakes and tiny datasets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from tests.pipeline.fake_api import FakeMKA1


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API for the whole session (starting one costs ~15 s)."""
    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def fake() -> FakeMKA1:
    """A fresh in-memory MKA1 fake."""
    return FakeMKA1()


def chat_example(i: int) -> dict[str, object]:
    """One valid supervised chat example."""
    return {
        "messages": [
            {"role": "system", "content": "You answer with the colour of the item."},
            {"role": "user", "content": f"What colour is item number {i}?"},
            {"role": "assistant", "content": f"Item {i} is blue."},
        ]
    }


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    """Write rows as JSONL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    """train (12) + validation (10) + smoke (1) files in a dataset folder."""
    d = tmp_path / "ds"
    write_jsonl(d / "train.jsonl", [chat_example(i) for i in range(12)])
    write_jsonl(d / "validation.jsonl", [chat_example(100 + i) for i in range(10)])
    write_jsonl(d / "smoke.jsonl", [{"prompt": "What colour is item number 3?", "must_contain": ["item"]}])
    return d
