"""Fixtures for trainer tests: an isolated base-model cache and tiny datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.trainer.helpers import chat_rows, write_jsonl


@pytest.fixture(autouse=True, scope="session")
def _base_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    mp.setenv("FTPIPE_BASE_MODEL_CACHE", str(tmp_path_factory.mktemp("base-models")))
    yield
    mp.undo()


@pytest.fixture
def chat_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", chat_rows(20))


@pytest.fixture
def valid_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "valid.jsonl", chat_rows(6, offset=100))
