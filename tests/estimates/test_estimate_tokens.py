"""The token estimate against the trainer's own count (micro-chat), and the documented sample figures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.trainer.spec import TrainingSpec
from backend.trainer.train import train
from estimate.tokens import EstimateError, count_tokens, count_with_heuristic, count_with_trainer
from tests.trainer.helpers import Recorder, write_jsonl

SAMPLE = Path(__file__).resolve().parents[2] / "datasets"


@pytest.fixture(autouse=True, scope="module")
def _base_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    mp.setenv("FTPIPE_BASE_MODEL_CACHE", str(tmp_path_factory.mktemp("base-models")))
    yield
    mp.undo()


def _chat_rows() -> list[dict[str, Any]]:
    """Varied chats: multi-turn, tool calls, weight 0, one past micro-chat's 256-token limit, one skipped."""
    rows: list[dict[str, Any]] = []
    for i in range(14):
        answer = " ".join(["Sure, here is the answer to question", str(i)] * (1 + i % 4))
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "You help with orders."},
                    {"role": "user", "content": f"Question {i}: where is order A-{1000 + i}?"},
                    {"role": "assistant", "content": answer, "weight": i % 5 != 0},
                    {"role": "user", "content": "Thanks, and the refund?"},
                    {"role": "assistant", "content": f"Refund {i} is on its way."},
                ]
            }
        )
    rows.append(
        {
            "messages": [
                {"role": "user", "content": "Book it"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "book", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "booked"},
                {"role": "assistant", "content": "Booked."},
            ]
        }
    )
    rows.append(
        {
            "messages": [
                {"role": "user", "content": "A long one?"},
                {"role": "assistant", "content": "long " * 400},
            ]
        }
    )
    # No trainable assistant token: the trainer skips it, so the estimate must too.
    rows.append(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "no", "weight": 0}]}
    )
    return rows


def _dpo_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(12):
        prompt = f"Customer {i} asks about a late parcel. " * (1 + 20 * (i == 3))  # one prompt over the limit
        rows.append(
            {
                "input": {"messages": [{"role": "user", "content": prompt}]},
                "preferred_output": [{"role": "assistant", "content": f"Sorry! Parcel {i} ships today."}],
                "non_preferred_output": [{"role": "assistant", "content": "Not my problem." * (1 + i % 3)}],
            }
        )
    return rows


def _trainer_count(path: Path, tmp_path: Path, method: str, n_epochs: int | str) -> int:
    spec = TrainingSpec(
        job_id="ftjob_estimate",
        base_model="local:micro-chat",
        training_file=path,
        validation_file=None,
        output_dir=tmp_path / "job",
        method=method,  # type: ignore[arg-type]
        n_epochs=n_epochs,  # type: ignore[arg-type]
        batch_size=4,
    )
    outcome = train(spec, Recorder())
    assert outcome.status == "succeeded"
    return outcome.trained_tokens


@pytest.mark.parametrize(
    ("method", "rows", "n_epochs"),
    [("supervised", _chat_rows(), 2), ("supervised", _chat_rows(), "auto"), ("dpo", _dpo_rows(), "auto")],
    ids=["supervised-2", "supervised-auto", "dpo-auto"],
)
def test_estimate_equals_what_the_trainer_counts(
    tmp_path: Path, method: str, rows: list[dict[str, Any]], n_epochs: int | str
) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    est = count_with_trainer(path, "local:micro-chat", method, n_epochs)  # type: ignore[arg-type]
    assert est.exact
    assert est.tokens == est.tokens_per_epoch * est.n_epochs
    assert est.tokens == _trainer_count(path, tmp_path, method, n_epochs)
    if method == "supervised":
        assert est.skipped == 1 and est.examples == len(rows) - 1
        assert est.at_limit == 1  # the 400-word example was truncated to 256 tokens
        # "auto" resolves on the 16 kept examples: ceil(100 / 16) = 7 epochs, as the trainer does.
        assert est.n_epochs == (2 if n_epochs == 2 else 7)
    else:
        assert est.at_limit >= 1 and est.n_epochs == 9  # ceil(100 / 12)


def test_counting_does_not_import_torch(tmp_path: Path) -> None:
    """The estimate runs in the flow process before upload: torch must stay out of it."""
    import subprocess

    path = write_jsonl(tmp_path / "train.jsonl", _chat_rows())
    code = (
        "import sys; from pathlib import Path; from estimate.tokens import count_tokens;"
        f"print(count_tokens(Path({str(path)!r}), 'local:micro-chat', 'supervised', 1).tokens,"
        " 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    tokens, torch_loaded = out.stdout.split()
    assert int(tokens) > 0 and torch_loaded == "False"


def test_sample_figures_in_the_docstring_hold() -> None:
    """datasets/customer-support at 3 epochs: exact 118,374 (tiny-chat) vs the chars/4 heuristic's 78,447."""
    train = SAMPLE / "customer-support" / "train.jsonl"
    assert count_tokens(train, "local:tiny-chat", "supervised", "auto").tokens == 118_374
    heuristic = count_tokens(train, "meetkai:functionary-medium", "supervised", "auto")
    assert not heuristic.exact and heuristic.tokens == 78_447 and heuristic.n_epochs == 3


def test_unknown_model_and_bad_file_name_the_problem(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", _chat_rows())
    with pytest.raises(EstimateError, match="Unknown base model 'local:nope'"):
        count_with_trainer(good, "local:nope", "supervised", 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "x"}]}\n{not json\n')
    with pytest.raises(EstimateError, match="bad.jsonl:2: invalid JSON"):
        count_with_trainer(bad, "local:micro-chat", "supervised", 1)
    with pytest.raises(EstimateError, match="invalid dataset"):
        count_with_heuristic(bad, 1)


def test_calibration_times_the_whole_job_from_a_few_steps(tmp_path: Path) -> None:
    """A few calibration steps predict the full run of the same job on this machine (loosely: CI is noisy)."""
    import time

    from estimate.calibrate import CALIBRATION_STEPS, calibrate

    path = write_jsonl(tmp_path / "train.jsonl", _chat_rows() * 4)  # 68 examples: 17 steps x 3 epochs
    predicted = calibrate(path, "local:micro-chat", "supervised", 3, batch_size=4)
    assert predicted.seconds is not None and f"{CALIBRATION_STEPS}-step calibration" in predicted.basis
    began = time.monotonic()
    _trainer_count(path, tmp_path, "supervised", 3)
    actual = time.monotonic() - began
    assert actual / 3 < predicted.seconds < actual * 3


def test_an_exact_count_is_remembered_for_the_same_file_and_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-run gets the same exact count without loading the tokenizer; another file or epochs is counted."""
    import estimate.tokens as tokens_mod

    monkeypatch.setenv("FTPIPE_STATE_DIR", str(tmp_path / "state"))
    path = write_jsonl(tmp_path / "train.jsonl", _chat_rows())
    first = count_tokens(path, "local:micro-chat", "supervised", 1)
    calls: list[int] = []
    real = tokens_mod.count_with_trainer
    monkeypatch.setattr(
        tokens_mod,
        "count_with_trainer",
        lambda *a: calls.append(1) or real(*a),  # type: ignore[func-returns-value]
    )
    assert count_tokens(path, "local:micro-chat", "supervised", 1) == first and calls == []
    assert count_tokens(path, "local:micro-chat", "supervised", 2).tokens == 2 * first.tokens and calls == [1]
    write_jsonl(path, _chat_rows()[:5])  # same name, other content
    assert count_tokens(path, "local:micro-chat", "supervised", 1).tokens < first.tokens and calls == [1, 1]


def test_the_count_cache_keeps_only_the_most_recently_used_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """token-counts.json is bounded: past TOKEN_COUNTS_KEEP the least recently used count (or an unstamped
    entry of an older version) is dropped, while one just read again stays."""
    import json

    import estimate.tokens as tokens_mod

    monkeypatch.setenv("FTPIPE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(tokens_mod, "TOKEN_COUNTS_KEEP", 2)
    cache = tmp_path / "state" / tokens_mod.TOKEN_COUNTS_FILE
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"left-by-an-older-version": {"tokens": 1}}), encoding="utf-8")
    path = write_jsonl(tmp_path / "train.jsonl", _chat_rows())
    calls: list[int] = []
    real = tokens_mod.count_with_trainer
    monkeypatch.setattr(
        tokens_mod,
        "count_with_trainer",
        lambda *a: calls.append(a[3]) or real(*a),  # type: ignore[func-returns-value]
    )

    def count(epochs: int) -> None:
        count_tokens(path, "local:micro-chat", "supervised", epochs)

    count(1)
    count(2)
    assert len(json.loads(cache.read_text())) == 2 and calls == [1, 2]  # the unstamped entry went first
    count(1)  # a hit: 1 is now more recent than 2
    count(3)  # over the bound: 2, the least recently used, is dropped
    assert len(json.loads(cache.read_text())) == 2 and calls == [1, 2, 3]
    count(1)
    count(3)
    assert calls == [1, 2, 3]
    count(2)
    assert calls == [1, 2, 3, 2]
