"""``ftpipe estimate``: prints tokens/price/duration, exits 1 over a budget, and never uploads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from estimate.tokens import count_tokens
from flows.backend_runtime import use_connection
from tests.jsonl_data import chat_example, write_jsonl
from tests.pipeline.fake_api import FakeMKA1


@pytest.fixture
def train(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "ds" / "train.jsonl", [chat_example(i) for i in range(12)])


def test_prints_the_exact_count_and_uploads_nothing(train: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeMKA1()
    with use_connection(fake.connection()):
        code = main(["estimate", str(train.parent), "--model", "local:micro-chat", "--epochs", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["tokens"]["tokens"] == count_tokens(train, "local:micro-chat", "supervised", 2).tokens
    assert out["tokens"]["exact"] is True and out["budget_problem"] is None
    assert out["price"] is None and "no pricing endpoint" in out["price_note"]  # the fake has none
    assert fake.count("POST", "/files") == 0 and fake.count("POST", "/fine_tuning/jobs") == 0


def test_over_the_token_budget_exits_1_with_one_line(train: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeMKA1()
    with use_connection(fake.connection()):
        code = main(["estimate", "--train", str(train), "--model", "local:micro-chat", "--max-tokens", "10"])
    out = capsys.readouterr().out
    assert code == 1
    (line,) = [x for x in out.splitlines() if x.startswith("over budget")]
    assert "> max_tokens 10;" in line and "or raise --max-tokens" in line
    assert fake.count("POST", "/files") == 0


def test_cost_budget_with_a_price_from_the_table(
    train: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote model: heuristic tokens, price from FTPIPE_TRAINING_PRICES, the cost checked against it."""
    monkeypatch.setenv("FTPIPE_TRAINING_PRICES", json.dumps({"remote-model": 1_000_000.0}))
    expected = count_tokens(train, "remote-model", "supervised", 3).tokens  # 1 currency unit per token
    fake = FakeMKA1()
    with use_connection(fake.connection()):
        under = main(
            [
                "estimate",
                "--train",
                str(train),
                "--model",
                "remote-model",
                "--epochs",
                "3",
                "--max-cost",
                str(expected),
            ]
        )
        over = main(
            [
                "estimate",
                "--train",
                str(train),
                "--model",
                "remote-model",
                "--epochs",
                "3",
                "--max-cost",
                str(expected - 1),
            ]
        )
    out = capsys.readouterr().out
    assert (under, over) == (0, 1)
    assert f"cost: {expected:,.2f} USD" in out and "approximate" in out
    assert f"over budget: estimate {expected:,.2f} USD" in out


def test_missing_training_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(tmp_path)]) == 2
    assert "no train.jsonl or training.jsonl in" in capsys.readouterr().err
