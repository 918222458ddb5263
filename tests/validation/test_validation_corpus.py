"""Every bad file is rejected with exactly the intended error; every warn file passes with its warning."""

from __future__ import annotations

import json
from typing import Any

import pytest
from vpaths import BAD, WARN

from validation import Issue, validate_dataset, validate_file

BAD_EXPECTED: dict[str, dict[str, Any]] = json.loads((BAD / "EXPECTED.json").read_text())
WARN_EXPECTED: dict[str, dict[str, Any]] = json.loads((WARN / "EXPECTED.json").read_text())
WARN_FILES = {k: v for k, v in WARN_EXPECTED.items() if "train" not in v}


def _run(folder: Any, name: str, spec: dict[str, Any]) -> Any:
    options = dict(spec["options"])
    kind = options.pop("kind", "auto")
    return validate_file(folder / name, kind, **options)


def _matches(issue: Issue, spec: dict[str, Any]) -> bool:
    return issue.line == spec["line"] and issue.field == spec["field"] and spec["message"] in issue.message


def test_corpus_is_big_enough_and_complete() -> None:
    assert len(BAD_EXPECTED) >= 30
    on_disk = {p.name for p in BAD.iterdir() if p.suffix in (".jsonl", ".gz")}
    assert on_disk == set(BAD_EXPECTED)


@pytest.mark.parametrize("name", sorted(BAD_EXPECTED))
def test_bad_file_reports_exactly_the_intended_error(name: str) -> None:
    spec = BAD_EXPECTED[name]
    report = _run(BAD, name, spec)
    assert not report.ok
    assert report.error_count_total == 1, [str(i) for i in report.errors]
    (error,) = report.errors
    assert _matches(error, spec), str(error)
    assert error.severity == "error"
    if spec["line"]:
        assert str(error) == f"{BAD / name}:{spec['line']}: {spec['field']}: {error.message}"
    else:  # a whole-file problem names no line (issue 15: never "file:0:")
        assert str(error) == f"{BAD / name}: {error.message}"


@pytest.mark.parametrize("name", sorted(WARN_FILES))
def test_warn_file_passes_with_its_warning(name: str) -> None:
    spec = WARN_FILES[name]
    report = _run(WARN, name, spec)
    assert report.ok, [str(i) for i in report.errors]
    assert report.warning_count_total == 1, [str(i) for i in report.warnings]
    assert _matches(report.warnings[0], spec), str(report.warnings[0])
    assert report.warnings[0].severity == "warning"


def test_train_validation_overlap_is_a_warning_naming_line_pairs() -> None:
    spec = WARN_EXPECTED["overlap_validation.jsonl"]
    report = validate_dataset(WARN / spec["train"], WARN / "overlap_validation.jsonl")
    assert report.ok
    assert report.overlap_count_total == 2
    (issue,) = report.overlap
    assert _matches(issue, spec), str(issue)
    assert issue in report.warnings


@pytest.mark.parametrize("folder,expected", [(BAD, BAD_EXPECTED), (WARN, WARN_FILES)])
def test_every_message_fits_on_one_screen_line(folder: Any, expected: dict[str, Any]) -> None:
    for name, spec in expected.items():
        report = _run(folder, name, spec)
        for issue in [*report.errors, *report.warnings]:
            assert "\n" not in issue.message
            assert len(issue.message) < 200, issue.message
            assert len(f"{name}:{issue.line}: {issue.field}: {issue.message}") < 200, str(issue)


def test_explicit_kind_mismatch_in_validation_file_uses_train_kind(tmp_path: Any) -> None:
    report = validate_dataset(
        BAD.parent.parent.parent / "datasets/preference-sample/train.jsonl",
        BAD.parent.parent.parent / "datasets/customer-support/validation.jsonl",
    )
    assert report.train.ok
    assert report.validation is not None and not report.validation.ok
    assert "in chat format" in report.validation.errors[0].message
