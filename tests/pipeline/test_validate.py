"""validate_dataset_task and ``ftpipe validate``: located messages, capping, stats, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from tasks.errors import DatasetInvalid
from tasks.validate import MAX_SHOWN_ISSUES, cap_issues, validate_dataset_task
from tests.pipeline.conftest import chat_example, write_jsonl


def _bad_file(tmp_path: Path, n_bad: int = 1) -> Path:
    rows = [chat_example(i) for i in range(12)]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with path.open("a") as fh:
        for _ in range(n_bad):
            fh.write(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    return path


def test_good_dataset_reports_stats(dataset_dir: Path) -> None:
    summary = validate_dataset_task.fn(
        dataset_dir / "train.jsonl", dataset_dir / "validation.jsonl", n_epochs=2
    )
    assert summary.ok and summary.n_errors == 0
    train = summary.stats["training"]
    assert train["examples"] == 12 and train["messages"] == 36
    assert 0 < train["min_tokens"] <= train["mean_tokens"] <= train["max_tokens"]
    assert train["estimated_billed_tokens"] == train["total_tokens"] * 2
    assert summary.estimated_billed_tokens == train["total_tokens"] * 2
    assert summary.stats["validation"]["examples"] == 10


def test_bad_dataset_raises_with_located_messages(tmp_path: Path) -> None:
    bad = _bad_file(tmp_path)
    with pytest.raises(DatasetInvalid) as info:
        validate_dataset_task.fn(bad)
    assert any(line.startswith(f"{bad}:13: messages.0.role:") for line in info.value.issues), (
        info.value.issues
    )
    assert f"{bad}:13: messages.0.role:" in str(info.value)


def test_issue_list_is_capped_with_count() -> None:
    issues = [f"f:{i}: $: bad" for i in range(30)]
    capped = cap_issues(issues)
    assert len(capped) == MAX_SHOWN_ISSUES + 1 and capped[-1] == "... and 10 more"
    assert cap_issues(issues[:3], total=50)[-1] == "... and 47 more"
    assert cap_issues(issues[:3]) == issues[:3]


def test_cli_validate_exit_codes(
    dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(dataset_dir / "train.jsonl")]) == 0
    bad = _bad_file(tmp_path, n_bad=40)
    assert main(["validate", str(bad), "--max-issues", "5"]) == 1
    out = capsys.readouterr().out
    located = [line for line in out.splitlines() if line.strip().startswith("error:")]
    assert any(line.strip().startswith(f"error: {bad}:13: messages.0.role:") for line in located), out
    assert len(located) == 6 and located[-1].strip() == "error: ... and 75 more"
    assert len(out.splitlines()) < 40  # fits on a screen despite 40+ issues
    assert "more" in out
    assert main(["validate", str(tmp_path / "missing.jsonl")]) == 1
