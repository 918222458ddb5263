"""Fixtures for the pipeline tests: one Prefect test harness per session, fakes and tiny datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.jsonl_data import chat_example, write_jsonl
from tests.pipeline.fake_api import FakeMKA1

__all__ = ["chat_example", "write_jsonl"]  # re-exported for the pipeline tests


@pytest.fixture
def fake() -> FakeMKA1:
    """A fresh in-memory MKA1 fake."""
    return FakeMKA1()


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    """train (12) + validation (10) + smoke (1) files in a dataset folder."""
    d = tmp_path / "ds"
    write_jsonl(d / "train.jsonl", [chat_example(i) for i in range(12)])
    write_jsonl(d / "validation.jsonl", [chat_example(100 + i) for i in range(10)])
    write_jsonl(d / "smoke.jsonl", [{"prompt": "What colour is item number 3?", "must_contain": ["item"]}])
    return d
