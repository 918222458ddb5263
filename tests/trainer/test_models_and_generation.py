"""Base models, Generator on trained dirs, the LoRA path for HF model dirs, and DPO."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from backend.trainer.base_models import (
    BUILTIN_MODELS,
    build_builtin_model,
    is_known_base_model,
    resolve_base_model,
)
from backend.trainer.generate import BatchItem, Generator
from backend.trainer.spec import TrainingSpec
from backend.trainer.tokenizer import build_tokenizer
from backend.trainer.train import train
from tests.trainer.helpers import Recorder, chat_rows, write_jsonl


def _spec(train_file: Path, out: Path, **kw: object) -> TrainingSpec:
    base = TrainingSpec("ftjob_t", "local:micro-chat", train_file, None, out, n_epochs=2, batch_size=4)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_builtin_models_are_deterministic_and_cached(tmp_path: Path) -> None:
    spec = BUILTIN_MODELS["local:micro-chat"]
    a, b = build_builtin_model(spec), build_builtin_model(spec)
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), na
    first = resolve_base_model("local:micro-chat", cache_dir=tmp_path)
    mtime = (first.path / "model.safetensors").stat().st_mtime_ns
    again = resolve_base_model("local:micro-chat", cache_dir=tmp_path)
    assert again.path == first.path and (again.path / "model.safetensors").stat().st_mtime_ns == mtime
    assert is_known_base_model("local:tiny-chat") and not is_known_base_model("local:nope")
    assert not is_known_base_model("local:relative/dir")


def test_generator_on_checkpoint_and_final(chat_file: Path, tmp_path: Path) -> None:
    rec = Recorder()
    out = train(_spec(chat_file, tmp_path / "job", n_epochs=4), rec)
    assert out.final_model_dir is not None
    gen = Generator(cache_size=1)
    msgs = [{"role": "user", "content": "Hi, how do I track my order? (ticket 3)"}]
    result = gen.generate(
        out.final_model_dir,
        msgs,
        instructions="You are a helpful support agent.",
        max_output_tokens=40,
        temperature=0,
        top_p=None,
        seed=None,
    )
    assert result.input_tokens > 10 and 0 < result.output_tokens <= 40
    assert result.text.startswith("Thanks")  # the first words every training answer starts with
    again = gen.generate(
        out.final_model_dir,
        msgs,
        instructions="You are a helpful support agent.",
        max_output_tokens=40,
        temperature=0,
        top_p=None,
        seed=None,
    )
    assert again == result  # greedy is deterministic
    _, _, ckpt_dir = rec.checkpoints[0]
    sampled = [
        gen.generate(
            ckpt_dir, msgs, instructions=None, max_output_tokens=12, temperature=1.0, top_p=0.9, seed=s
        )
        for s in (1, 1, 2)
    ]
    assert sampled[0] == sampled[1]
    assert 0 < sampled[0].output_tokens <= 12
    base = gen.generate(
        "local:micro-chat", msgs, instructions=None, max_output_tokens=5, temperature=0, top_p=None, seed=None
    )
    assert base.output_tokens <= 5


def _tiny_hf_dir(path: Path, with_template: bool) -> Path:
    tok = build_tokenizer()
    if not with_template:
        tok.chat_template = None
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_local_path_model_is_fine_tuned_with_lora(chat_file: Path, tmp_path: Path) -> None:
    model_dir = _tiny_hf_dir(tmp_path / "hf-model", with_template=True)
    before = load_file(model_dir / "model.safetensors")
    rec = Recorder()
    spec = _spec(
        chat_file,
        tmp_path / "job",
        base_model=f"local:{model_dir}",
        n_epochs=3,
        metrics_every_n_steps=1,
        learning_rate_multiplier=10.0,
    )  # LoRA on a random tiny model needs a push to move in 15 steps
    out = train(spec, rec)
    assert out.status == "succeeded" and out.final_model_dir is not None
    meta = json.loads((out.final_model_dir / "ftpipe_model.json").read_text())
    assert meta["kind"] == "lora" and meta["base_model_path"] == str(model_dir)
    assert (out.final_model_dir / "adapter_model.safetensors").is_file()
    assert not (out.final_model_dir / "model.safetensors").exists()  # only the adapter is saved
    after = load_file(model_dir / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # base weights untouched
    losses = [loss for _, loss in rec.metric_losses()]
    assert len(losses) == 15 and sum(losses[-3:]) < sum(losses[:3])
    result = Generator().generate(
        out.final_model_dir,
        [{"role": "user", "content": "hello"}],
        instructions=None,
        max_output_tokens=8,
        temperature=0,
        top_p=None,
        seed=None,
    )
    assert 0 < result.output_tokens <= 8


def test_local_path_without_chat_template_also_trains(chat_file: Path, tmp_path: Path) -> None:
    model_dir = _tiny_hf_dir(tmp_path / "hf-plain", with_template=False)
    out = train(_spec(chat_file, tmp_path / "job", base_model=f"local:{model_dir}", n_epochs=1), Recorder())
    assert out.status == "succeeded"


def _preference_rows(n: int) -> list[dict]:
    rows = []
    for i, row in enumerate(chat_rows(n)):
        msgs = row["messages"]
        rows.append(
            {
                "input": {"messages": msgs[:2]},
                "preferred_output": [msgs[2]],
                "non_preferred_output": [{"role": "assistant", "content": f"No. Go away ({i})."}],
            }
        )
    return rows


@pytest.mark.parametrize("lora", [False, True])
def test_dpo_learns_the_preference(tmp_path: Path, lora: bool) -> None:
    data = write_jsonl(tmp_path / "pref.jsonl", _preference_rows(16))
    base_model = f"local:{_tiny_hf_dir(tmp_path / 'hf', True)}" if lora else "local:micro-chat"
    rec = Recorder()
    spec = _spec(
        data,
        tmp_path / "job",
        method="dpo",
        base_model=base_model,
        n_epochs=3,
        beta=0.5,
        metrics_every_n_steps=1,
    )
    out = train(spec, rec)
    assert out.status == "succeeded"
    assert out.resolved_hyperparameters["beta"] == 0.5
    losses = [loss for _, loss in rec.metric_losses()]
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1: -log(sigmoid(0))
    assert losses[-1] < losses[0]
    for _, metrics, _ in rec.checkpoints:
        assert set(metrics) >= {
            "train_loss",
            "valid_loss",
            "full_valid_loss",
            "full_valid_mean_token_accuracy",
        }
    assert rec.checkpoints[-1][1]["full_valid_mean_token_accuracy"] > 0.5


def test_greedy_batch_matches_one_by_one(chat_file: Path, tmp_path: Path) -> None:
    out = train(_spec(chat_file, tmp_path / "job", n_epochs=4), Recorder())
    assert out.final_model_dir is not None
    gen = Generator(cache_size=1)
    items = [
        BatchItem([{"role": "user", "content": "Hi, how do I track my order? (ticket 3)"}], None, 40),
        BatchItem([{"role": "user", "content": "refund"}], "You are a helpful support agent.", 5),
        BatchItem(
            [
                {"role": "user", "content": "My order is late, it has been two weeks already."},
                {"role": "assistant", "content": "Which order?"},
                {"role": "user", "content": "ticket 7"},
            ],
            None,
            24,
        ),
    ]
    batched = gen.generate_greedy_batch(out.final_model_dir, items)
    alone = [
        gen.generate(
            out.final_model_dir,
            i.messages,
            instructions=i.instructions,
            max_output_tokens=i.max_output_tokens,
        )
        for i in items
    ]
    assert batched == alone
    assert batched[1].output_tokens <= 5 and any(r.text for r in batched)
