"""Chat encoding (assistant-only loss mask, weight 0, tool calls) and "auto" hyperparameter rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backend.trainer.chat import ChatFormat
from backend.trainer.data import collate, epoch_batches, load_examples
from backend.trainer.hyperparams import auto_batch_size, resolve
from backend.trainer.spec import TrainingError, TrainingSpec
from backend.trainer.tokenizer import build_tokenizer
from contract.wire import auto_epochs
from tests.trainer.helpers import write_jsonl


@pytest.fixture(scope="module")
def fmt() -> ChatFormat:
    return ChatFormat(build_tokenizer(), max_seq_len=512)


def _trained_text(fmt: ChatFormat, ids: list[int], mask: list[int]) -> str:
    return str(fmt.tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m]))


def test_only_assistant_tokens_carry_loss(fmt: ChatFormat) -> None:
    enc = fmt.encode_chat(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where is my order?"},
            {"role": "assistant", "content": "It ships today."},
        ]
    )
    assert _trained_text(fmt, enc.input_ids, enc.loss_mask) == "It ships today.<|im_end|>"


def test_weight_zero_assistant_turn_is_excluded(fmt: ChatFormat, tmp_path: Path) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bad old answer.", "weight": 0},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": "Good answer.", "weight": 1},
    ]
    enc = fmt.encode_chat(messages)
    assert _trained_text(fmt, enc.input_ids, enc.loss_mask) == "Good answer.<|im_end|>"
    # The same mask reaches the loss labels used by the training loop.
    path = write_jsonl(tmp_path / "w.jsonl", [{"messages": messages}])
    (example,), _ = load_examples(path, "supervised", fmt, "training_file")
    labels = collate([example], pad_id=0).labels[0]  # type: ignore[list-item]
    assert str(fmt.tokenizer.decode([int(t) for t in labels if t >= 0])) == "Good answer.<|im_end|>"


def test_all_weight_zero_examples_are_skipped(fmt: ChatFormat, tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]},
        {"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]},
    ]
    examples, skipped = load_examples(
        write_jsonl(tmp_path / "z.jsonl", rows), "supervised", fmt, "training_file"
    )
    assert (len(examples), skipped) == (1, 1)


def test_tool_calls_render_as_json(fmt: ChatFormat) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_order", "arguments": '{"id": "A1"}'}}
    enc = fmt.encode_chat(
        [{"role": "user", "content": "status?"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    )
    text = _trained_text(fmt, enc.input_ids, enc.loss_mask)
    assert '"name":"get_order"' in text and text.endswith("<|im_end|>")


def test_missing_role_is_rejected_with_line(fmt: ChatFormat, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [{"messages": [{"content": "x"}]}])
    with pytest.raises(TrainingError, match=r"r.jsonl:1: messages\[0\]"):
        load_examples(path, "supervised", fmt, "training_file")


def test_epoch_batches_cover_everything_once_and_depend_on_seed() -> None:
    lengths = [(i * 37) % 101 for i in range(50)]
    batches = epoch_batches(lengths, 4, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(50))
    assert batches == epoch_batches(lengths, 4, seed=1, epoch=0)
    assert batches != epoch_batches(lengths, 4, seed=1, epoch=1)
    assert batches != epoch_batches(lengths, 4, seed=2, epoch=0)


def test_auto_hyperparameters() -> None:
    assert auto_epochs(300) == 3
    assert auto_epochs(20) == 5  # small sets get more epochs (~100 examples seen)
    assert auto_epochs(20_000) == 1
    assert auto_batch_size(300) == 8
    assert auto_batch_size(20) == 2
    assert auto_batch_size(100_000) == 16
    spec = TrainingSpec("j", "local:micro-chat", Path("x"), None, Path("o"), learning_rate_multiplier=2.0)
    hp = resolve(spec, 300, base_learning_rate=1e-3)
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate) == (3, 8, pytest.approx(2e-3))
    with pytest.raises(TrainingError) as err:
        resolve(TrainingSpec("j", "m", Path("x"), None, Path("o"), n_epochs=0), 10, 1e-3)
    assert err.value.param == "n_epochs"
