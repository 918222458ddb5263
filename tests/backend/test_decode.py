"""The lean greedy decoder gives exactly HF generate's tokens, usage and streamed text, alone and batched."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from backend.trainer.decode import lean_unsupported
from backend.trainer.generate import BatchItem, GenerationResult, Generator
from backend.trainer.spec import TrainingSpec
from backend.trainer.tokenizer import build_tokenizer
from backend.trainer.train import train
from tests.trainer.helpers import Recorder, chat_rows, write_jsonl

SYSTEM = "You are a helpful support agent."
CHATS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Hi, how do I reset my password? (ticket 3)"}],
    [{"role": "user", "content": "refund"}],
    [
        {"role": "user", "content": "My order is late, it has been two weeks already and nobody answers."},
        {"role": "assistant", "content": "Which order?"},
        {"role": "user", "content": "ticket 7"},
    ],
    [{"role": "user", "content": "Hi, how do I track my order? (ticket 12)"}],
    [{"role": "user", "content": "Hi, how do I cancel my plan? (ticket 40)"}],
]


def _train(base: str, data: Path, out: Path, **kw: Any) -> Path:
    spec = TrainingSpec("ftjob_decode", base, data, None, out, n_epochs=8, batch_size=1, seed=3)
    result = train(replace(spec, **kw), Recorder())
    assert result.status == "succeeded" and result.final_model_dir is not None
    return result.final_model_dir


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", chat_rows(20))


@pytest.fixture(scope="module")
def fluent_model(tmp_path_factory: pytest.TempPathFactory, data_file: Path) -> Path:
    """micro-chat trained until it ends its replies by itself."""
    return _train("local:micro-chat", data_file, tmp_path_factory.mktemp("fluent"))


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Qwen2-shaped model folder with grouped-query attention (4 query heads share 2 kv heads)."""
    path = tmp_path_factory.mktemp("qwen2")
    tok = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _both(model: str | Path) -> tuple[Generator, Generator]:
    hf, lean = Generator(cache_size=1, lean=False), Generator(cache_size=1)
    assert hf._get(model).decoder is None
    assert lean._get(model).decoder is not None, lean_unsupported(lean._get(model).model)
    return hf, lean


def _alone(gen: Generator, model: str | Path, item: BatchItem, **kw: Any) -> GenerationResult:
    return gen.generate(
        model, item.messages, instructions=item.instructions, max_output_tokens=item.max_output_tokens, **kw
    )


def _items(limits: list[int]) -> list[BatchItem]:
    return [
        BatchItem(chat, SYSTEM if i % 2 else None, limit)
        for i, (chat, limit) in enumerate(zip(CHATS, limits, strict=True))
    ]


@pytest.mark.parametrize("model", ["local:micro-chat", "local:tiny-chat"])
def test_builtin_random_models_match_generate(model: str) -> None:
    hf, lean = _both(model)
    items = _items([12, 1, 20, 7, 16])
    want = hf.generate_greedy_batch(model, items)
    assert lean.generate_greedy_batch(model, items) == want
    assert [r.output_tokens for r in want] == [12, 1, 20, 7, 16]  # random weights never end a reply
    assert [_alone(lean, model, i) for i in items[:2]] == [_alone(hf, model, i) for i in items[:2]]


def test_trained_model_matches_generate_batched_alone_and_every_k_steps(fluent_model: Path) -> None:
    hf, lean = _both(fluent_model)
    items = _items([48, 1, 48, 5, 48]) + [BatchItem([{"role": "user", "content": "x"}], None, 48)]
    want = hf.generate_greedy_batch(fluent_model, items)
    got = lean.generate_greedy_batch(fluent_model, items)
    assert got == want
    assert [_alone(lean, fluent_model, i) for i in items] == [_alone(hf, fluent_model, i) for i in items]
    # Rows end at their own end token at different steps (the batch shrinks), or at their own limit.
    ended = [
        r.output_tokens
        for r, i in zip(want, items, strict=True)
        if r.output_tokens < (i.max_output_tokens or 0)
    ]
    assert len(set(ended)) >= 2 and want[1].output_tokens == 1 and want[3].output_tokens <= 5
    assert all(r.text for r in want)
    # Reading tokens back only every few steps (as on an accelerator) changes nothing either.
    entry = lean._get(fluent_model)
    stop, pad = lean._stops(entry)
    prompts = [lean._prompt(entry, i.messages, i.instructions, i.max_output_tokens) for i in items]
    for every in (3, 8):
        news = entry.decoder.greedy(
            [p for p, _ in prompts], [n for _, n in prompts], stop, pad, sync_every=every
        )  # type: ignore[union-attr]
        assert [
            lean._reply(entry, new, stop, len(p)) for new, (p, _) in zip(news, prompts, strict=True)
        ] == want


@pytest.mark.parametrize("model", ["local:tiny-chat", "fluent"])
def test_a_prefill_in_chunks_of_similar_lengths_gives_the_same_tokens(
    monkeypatch: pytest.MonkeyPatch, fluent_model: Path, model: str
) -> None:
    # Rows are prefilled two at a time, shortest first, each pair padded to its own longest prompt only.
    from backend.trainer import decode

    ref: str | Path = fluent_model if model == "fluent" else model
    hf, lean = _both(ref)
    items = _items([24, 3, 24, 9, 24]) + [BatchItem([{"role": "user", "content": "x"}], None, 24)]
    want = hf.generate_greedy_batch(ref, items)
    monkeypatch.setattr(decode, "PREFILL_ROWS", 2)
    assert lean.generate_greedy_batch(ref, items) == want
    monkeypatch.setattr(decode, "PREFILL_ROWS", 1)
    assert lean.generate_greedy_batch(ref, items) == want


def test_streamed_pieces_concatenate_to_the_reply(fluent_model: Path) -> None:
    hf, lean = _both(fluent_model)
    for item in _items([48, 1, 48, 5, 48]):
        pieces: list[str] = []
        streamed = _alone(lean, fluent_model, item, on_text=pieces.append)
        assert streamed == _alone(hf, fluent_model, item)
        assert "".join(pieces) == streamed.text
        assert len(pieces) > 1 or len(streamed.text) < 8  # it really streamed


def test_context_window_truncation_matches_generate(fluent_model: Path) -> None:
    hf, lean = _both(fluent_model)
    long = " ".join(f"word{i}" for i in range(400))  # far past micro-chat's 256-token window
    items = [
        BatchItem([{"role": "user", "content": long}], None, 200),
        BatchItem([{"role": "user", "content": "Hi, how do I get a refund? (ticket 2)"}], None, 30),
    ]
    want = hf.generate_greedy_batch(fluent_model, items)
    assert lean.generate_greedy_batch(fluent_model, items) == want
    assert want[0].input_tokens + 128 == 256 and want[0].output_tokens <= 128
    assert _alone(lean, fluent_model, items[0]) == _alone(hf, fluent_model, items[0])


def test_grouped_query_attention_and_lora_models_match_generate(
    qwen2_dir: Path, data_file: Path, tmp_path: Path
) -> None:
    base = f"local:{qwen2_dir}"
    hf, lean = _both(base)
    items = _items([10, 3, 14, 1, 6])
    assert lean.generate_greedy_batch(base, items) == hf.generate_greedy_batch(base, items)
    # A fine-tuned folder model is a LoRA adapter, merged into the base on load.
    lora = _train(base, data_file, tmp_path / "job", n_epochs=1, max_steps=2)
    hf, lean = _both(lora)
    assert lean.generate_greedy_batch(lora, items) == hf.generate_greedy_batch(lora, items)


def test_models_it_does_not_mirror_go_through_generate(qwen2_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "penalised"
    shutil.copytree(qwen2_dir, folder)
    config = GenerationConfig.from_pretrained(folder)
    config.repetition_penalty = 1.3  # a logits processor, which only generate applies
    config.save_pretrained(folder)
    ref = f"local:{folder}"
    gen = Generator(cache_size=1)
    entry = gen._get(ref)
    assert entry.decoder is None and "repetition_penalty" in str(lean_unsupported(entry.model))
    items = _items([10, 3, 14, 1, 6])
    assert gen.generate_greedy_batch(ref, items) == Generator(lean=False).generate_greedy_batch(ref, items)
    model: Any = Generator(cache_size=1)._get(f"local:{qwen2_dir}").model
    assert lean_unsupported(model) is None
    model.config._attn_implementation = "eager"
    assert "eager" in str(lean_unsupported(model))
    model.config._attn_implementation = "sdpa"
    model.config.model_type = "gpt_neox"
    assert "gpt_neox" in str(lean_unsupported(model))
