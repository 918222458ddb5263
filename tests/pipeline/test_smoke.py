"""smoke_test_task: empty output and missing substrings fail; case-insensitive match passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import SmokeTestFailed
from tasks.smoke import smoke_test_task
from tasks.smoke_prompts import SmokePrompt, load_smoke_file
from tests.pipeline.fake_api import FakeMKA1


def test_passes_case_insensitively(fake: FakeMKA1) -> None:
    fake.reply = lambda model, prompt: "The Colour is BLUE."
    with fake.client() as c:
        result = smoke_test_task.fn(
            c, "ft:m", [SmokePrompt(prompt="colour?", must_contain=["blue", "colour"])]
        )
    assert result.passed and result.cases[0].output == "The Colour is BLUE."
    assert result.cases[0].latency_s >= 0


def test_missing_substring_fails(fake: FakeMKA1) -> None:
    fake.reply = lambda model, prompt: "red"
    with fake.client() as c, pytest.raises(SmokeTestFailed) as info:
        smoke_test_task.fn(c, "ft:m", [SmokePrompt(prompt="colour?", must_contain=["blue"])])
    assert "missing ['blue']" in str(info.value)


def test_empty_output_fails(fake: FakeMKA1) -> None:
    fake.reply = lambda model, prompt: "   "
    with fake.client() as c, pytest.raises(SmokeTestFailed) as info:
        smoke_test_task.fn(c, "ft:m", [SmokePrompt(prompt="anything")])
    assert "empty output" in str(info.value)


def test_load_smoke_file(tmp_path: Path) -> None:
    path = tmp_path / "smoke.jsonl"
    path.write_text('{"prompt": "a", "must_contain": ["x"]}\n\n{"prompt": "b"}\n')
    assert load_smoke_file(path) == [SmokePrompt(prompt="a", must_contain=["x"]), SmokePrompt(prompt="b")]
    path.write_text('{"prompt": ""}\n')
    with pytest.raises(ValueError, match=r"smoke.jsonl:1"):
        load_smoke_file(path)
