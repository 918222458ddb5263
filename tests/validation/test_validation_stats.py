"""Statistics on a small hand-computed file, the issue cap, kind detection and the token heuristic."""

from __future__ import annotations

import json
from pathlib import Path

from validation import DatasetStats, Issue, validate_dataset, validate_file
from validation.tokens import messages_tokens, text_tokens


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ex(*pairs: tuple[str, str], **extra: object) -> dict[str, object]:
    msgs: list[dict[str, object]] = [{"role": r, "content": c} for r, c in pairs]
    for key, value in extra.items():
        msgs[-1][key] = value
    return {"messages": msgs}


def test_token_heuristic() -> None:
    assert [text_tokens("x" * n) for n in (0, 1, 4, 5, 8)] == [0, 1, 1, 2, 2]
    # 3 per example + (4 + ceil(len/4)) per message
    assert (
        messages_tokens([{"role": "user", "content": "abcd"}, {"role": "assistant", "content": "abcde"}])
        == 3 + 5 + 6
    )


def test_stats_hand_computed(tmp_path: Path) -> None:
    # tokens: 3 + sum(4 + ceil(chars/4)) per message
    rows = [_ex(("user", f"ab{i:02d}"), ("assistant", "abcdefgh")) for i in range(7)]  # 3+5+6 = 14 each
    rows.append(_ex(("system", "ab"), ("user", "abcd"), ("assistant", "x" * 40)))  # 3+5+5+14 = 27
    rows.append(
        _ex(
            ("user", "q1"),
            (
                "assistant",
                "a1",
            ),
            ("user", "q2"),
            ("assistant", "a2"),
        )
    )  # 3+4*5 = 23
    rows.append(_ex(("developer", "dev"), ("user", "hi"), ("assistant", "ok"), weight=1))  # 3+5+5+5 = 18
    path = _write(tmp_path / "s.jsonl", rows)
    report = validate_file(path, token_limit=20, n_epochs=2)
    assert report.ok and report.kind == "chat"
    st = report.stats
    assert isinstance(st, DatasetStats)
    assert (st.examples, st.messages, st.lines) == (10, 7 * 2 + 3 + 4 + 3, 10)
    assert (st.min_tokens, st.max_tokens, st.total_tokens) == (14, 27, 7 * 14 + 27 + 23 + 18)
    assert st.mean_tokens == round((7 * 14 + 27 + 23 + 18) / 10, 2)
    assert st.examples_over_limit == 2
    assert st.billable_tokens_per_epoch == 7 * 14 + 20 + 20 + 18
    assert st.estimated_billed_tokens == 2 * st.billable_tokens_per_epoch
    assert st.role_counts == {"assistant": 11, "developer": 1, "system": 1, "user": 11}
    assert st.examples_with_system == 2
    assert st.multi_turn_examples == 1
    assert [w.line for w in report.warnings] == [8, 9]  # the two over-limit examples
    assert all("it will be truncated" in w.message for w in report.warnings)


def test_issue_str_and_file_level_line_zero(tmp_path: Path) -> None:
    issue = Issue("f.jsonl", 3, "messages.2.content", "content is empty")
    assert str(issue) == "f.jsonl:3: messages.2.content: content is empty"
    report = validate_file(_write(tmp_path / "few.jsonl", [_ex(("user", "a"), ("assistant", "b"))]))
    assert [(e.line, e.field) for e in report.errors] == [(0, "$")]


def test_cap_keeps_max_issues_and_counts_all(tmp_path: Path) -> None:
    rows: list[object] = [_ex(("user", f"q{i}"), ("assistant", "a"), weight=7) for i in range(120)]
    rows += [_ex(("user", f"z{i}"), ("assistant", "b"), ("user", "c")) for i in range(30)]  # warnings
    report = validate_file(_write(tmp_path / "many.jsonl", rows), max_issues=10)
    assert not report.ok
    assert len(report.errors) == 10 and report.error_count_total == 120
    assert len(report.warnings) == 10 and report.warning_count_total == 30
    assert report.issue_count_total == 150 and report.truncated
    assert [e.line for e in report.errors] == list(range(1, 11))


def test_kind_auto_detects_preference(tmp_path: Path) -> None:
    row = {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}],
    }
    rows = [{**row, "input": {"messages": [{"role": "user", "content": f"q{i}"}]}} for i in range(10)]
    report = validate_file(_write(tmp_path / "p.jsonl", rows))
    assert report.ok and report.kind == "preference"
    # input 3+4+1, outputs max(4+1, 4+1) -> 13
    assert report.stats.total_tokens == 10 * 13


def test_duplicates_name_the_first_occurrence(tmp_path: Path) -> None:
    rows = [_ex(("user", f"q{i}"), ("assistant", "a")) for i in range(10)]
    rows += [rows[3], rows[3], rows[0]]
    report = validate_file(_write(tmp_path / "d.jsonl", rows))
    assert report.ok
    assert [(w.line, w.message) for w in report.warnings] == [
        (11, "duplicate of line 4"),
        (12, "duplicate of line 4"),
        (13, "duplicate of line 1"),
    ]


def test_auto_epochs_scale_with_dataset_size(tmp_path: Path) -> None:
    rows = [_ex(("user", f"q{i}"), ("assistant", "a")) for i in range(10)]
    report = validate_dataset(_write(tmp_path / "t.jsonl", rows), n_epochs="auto")
    assert report.n_epochs == 10  # ceil(100 / 10)
    assert report.train.stats.n_epochs == 10
    assert report.estimated_billed_tokens == report.train.stats.billable_tokens_per_epoch * 10


def test_missing_file_is_a_file_level_error(tmp_path: Path) -> None:
    report = validate_file(tmp_path / "nope.jsonl")
    assert not report.ok and report.errors[0].line == 0 and "cannot open" in report.errors[0].message
