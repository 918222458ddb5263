"""Eval files (errors name file:line: field), cases derived from validation files, fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.evalset import EvalCase, EvalSetError, cases_from_dataset_file, load_eval_file

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_sample_smoke_file_loads_as_checks_only_cases() -> None:
    smoke = load_eval_file(REPO / "datasets/customer-support/smoke.jsonl", kind="smoke")
    assert smoke.kind == "smoke" and len(smoke.cases) == 5
    assert all(c.reference is None and c.check_names() == ["must_contain"] for c in smoke.cases)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "e.jsonl:2: invalid JSON"),
        ('["a"]', "e.jsonl:2: expected a JSON object, got list"),
        ({"prompt": "q", "must_contains": ["x"]}, "e.jsonl:2: must_contains: Extra inputs are not permitted"),
        ({"prompt": "q", "regex": "(unclosed"}, "e.jsonl:2: regex: not a valid regular expression"),
        ({"prompt": "q", "json_schema": {"type": "nope"}}, "e.jsonl:2: json_schema: not a valid JSON Schema"),
        (
            {"prompt": "q", "messages": [{"role": "user", "content": "x"}]},
            "give exactly one of prompt or messages",
        ),
        ({"prompt": "q", "max_chars": 0}, "e.jsonl:2: max_chars: Input should be greater than or equal to 1"),
        ({"prompt": "q", "must_contain": [""]}, "e.jsonl:2: must_contain: must not contain an empty string"),
    ],
)
def test_bad_line_is_named(tmp_path: Path, line: object, expected: str) -> None:
    path = _write(tmp_path / "e.jsonl", [{"prompt": "fine", "reference": "ok"}, line])
    with pytest.raises(EvalSetError) as info:
        load_eval_file(path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match="no eval cases"):
        load_eval_file(_write(tmp_path / "e.jsonl", ["", "  "]))


def test_validation_file_becomes_prompt_and_reference(tmp_path: Path) -> None:
    multi_turn = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "My order is late."},
            {"role": "assistant", "content": "Which order?", "weight": 0},
            {"role": "user", "content": "A-1"},
            {"role": "assistant", "content": " It ships today. "},
        ]
    }
    tool_use = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "w"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ]
    }
    preference = {
        "input": {"messages": [{"role": "user", "content": "Help?"}]},
        "preferred_output": [{"role": "assistant", "content": "Sure!"}],
        "non_preferred_output": [{"role": "assistant", "content": "No."}],
    }
    evalset = cases_from_dataset_file(_write(tmp_path / "v.jsonl", [multi_turn, tool_use, preference]))
    assert evalset.skipped == 1 and "1 line(s)" in evalset.notes[0]
    first, second = evalset.cases
    assert [m.role for m in first.input_messages()] == ["system", "user", "assistant", "user"]
    assert first.reference == "It ships today." and first.prompt_text() == "A-1"
    assert second.prompt_text() == "Help?" and second.reference == "Sure!"


def test_sample_validation_file_gives_one_case_per_line() -> None:
    evalset = cases_from_dataset_file(REPO / "datasets/customer-support/validation.jsonl")
    assert len(evalset.cases) == 40 and evalset.skipped == 0
    assert all(c.reference and c.reference.startswith(("Hi there!", "Thanks!")) for c in evalset.cases)


def test_fingerprint_changes_with_cases_and_settings(tmp_path: Path) -> None:
    a = load_eval_file(_write(tmp_path / "a.jsonl", [{"prompt": "q", "reference": "r"}]))
    b = load_eval_file(_write(tmp_path / "b.jsonl", [{"reference": "r", "prompt": "q"}]))
    c = load_eval_file(_write(tmp_path / "c.jsonl", [{"prompt": "q", "reference": "r2"}]))
    assert a.fingerprint(v=1) == b.fingerprint(v=1)  # key order and file name do not matter
    assert a.fingerprint(v=1) != c.fingerprint(v=1)
    assert a.fingerprint(v=1) != a.fingerprint(v=2)


def test_case_needs_no_reference_but_not_an_assistant_tail() -> None:
    with pytest.raises(ValueError, match="must not end with an assistant turn"):
        EvalCase(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
