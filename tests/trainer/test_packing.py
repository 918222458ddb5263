"""Packed batches: same labels, same per-token loss, same gradients and same training run as padded ones."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from backend.trainer.base_models import resolve_base_model
from backend.trainer.chat import ChatFormat
from backend.trainer.data import IGNORE, SFTExample, collate, load_examples, pack
from backend.trainer.device import PRECISION_ENV, cpu_autocast
from backend.trainer.losses import sequence_logps, sft_loss
from backend.trainer.modeling import load_for_training
from backend.trainer.packing import PACKING_ENV, supports_packing
from backend.trainer.spec import TrainingSpec
from backend.trainer.train import train
from tests.trainer.helpers import Recorder, chat_rows, write_jsonl

# Packed and padded rows go through different matrix shapes, so sums come out in another order.
FLOAT_TOL = 1e-5


def _rows_with_weight_zero() -> list[dict[str, Any]]:
    rows = chat_rows(7)
    rows.append(
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "An answer we do not want.", "weight": 0},
                {"role": "user", "content": "Again, please?"},
                {"role": "assistant", "content": "Go to Settings, then Billing."},
            ]
        }
    )
    return rows


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[SFTExample]]:
    base = resolve_base_model("local:micro-chat")
    loaded = load_for_training(base)
    fmt = ChatFormat(loaded.tokenizer, base.max_seq_len)
    path = write_jsonl(tmp_path_factory.mktemp("pack") / "train.jsonl", _rows_with_weight_zero())
    examples, _ = load_examples(path, "supervised", fmt, "training_file")
    return loaded.model, [e for e in examples if isinstance(e, SFTExample)]


def test_pack_labels_are_the_padded_labels_back_to_back(micro: tuple[Any, list[SFTExample]]) -> None:
    _, seqs = micro
    padded, packed = collate(seqs, pad_id=0), pack(seqs, pad_id=0)
    assert packed.input_ids.shape == (1, sum(s.length for s in seqs)) and packed.attention_mask is None
    assert packed.n_tokens == padded.n_tokens and packed.n_sequences == len(seqs) == padded.n_sequences
    assert packed.bounds is not None and packed.position_ids is not None
    for i, s in enumerate(seqs):
        start, end = packed.bounds[i], packed.bounds[i + 1]
        assert packed.input_ids[0, start:end].tolist() == s.input_ids
        assert packed.position_ids[0, start:end].tolist() == list(range(s.length))
        # Column 0 is never a target in a padded row; in a packed row the first label stops a prediction
        # across the boundary. The rest (assistant-only, weight-0 turns excluded) is the padded row's.
        assert packed.labels[0, start] == IGNORE
        assert packed.labels[0, start + 1 : end].tolist() == padded.labels[i, 1 : s.length].tolist()
    assert packed.sequence_index()[0].tolist() == [i for i, s in enumerate(seqs) for _ in range(s.length)]


def test_packed_loss_and_gradients_match_padded(micro: tuple[Any, list[SFTExample]]) -> None:
    model, seqs = micro
    assert supports_packing(model)
    results = []
    for batch in (collate(seqs, pad_id=0), pack(seqs, pad_id=0)):
        model.zero_grad(set_to_none=True)
        loss, stats = sft_loss(model, batch)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        with torch.no_grad():
            logps = sequence_logps(model, batch)
        results.append((loss.item(), stats, grads, logps))
    model.zero_grad(set_to_none=True)
    (loss_a, stats_a, grads_a, logps_a), (loss_b, stats_b, grads_b, logps_b) = results
    assert stats_a.count == stats_b.count > 0
    assert loss_b == pytest.approx(loss_a, rel=FLOAT_TOL)  # per-token loss
    assert int(stats_a.correct) == int(stats_b.correct)
    assert torch.allclose(logps_a, logps_b, rtol=FLOAT_TOL, atol=1e-4)  # each sequence's own sum
    for ga, gb in zip(grads_a, grads_b, strict=True):
        assert torch.allclose(ga, gb, rtol=1e-4, atol=1e-6)


def test_packed_sequence_sees_only_itself(micro: tuple[Any, list[SFTExample]]) -> None:
    """A sequence's log-prob is the same alone, packed after others, and packed before others."""
    model, seqs = micro
    with torch.no_grad():
        alone = sequence_logps(model, pack([seqs[2]], pad_id=0))[0]
        after = sequence_logps(model, pack(seqs[:3], pad_id=0))[2]
        before = sequence_logps(model, pack([seqs[2], seqs[0]], pad_id=0))[0]
    assert after == pytest.approx(float(alone), rel=FLOAT_TOL)
    assert before == pytest.approx(float(alone), rel=FLOAT_TOL)


def test_packed_attention_runs_in_fp32_under_cpu_bf16_autocast(
    micro: tuple[Any, list[SFTExample]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under CPU bf16 autocast only the linear layers run in bf16: attention gets fp32 inputs (the CPU's bf16
    attention backward is slower), and the loss and gradients stay close to the fp32 step's."""
    from backend.trainer import packing

    model, seqs = micro
    batch = pack(seqs, pad_id=0)
    seen: list[torch.dtype] = []
    real = packing._per_example

    def spy(query: torch.Tensor, *args: Any) -> torch.Tensor:
        seen.append(query.dtype)
        return real(query, *args)

    monkeypatch.setattr(packing, "_per_example", spy)
    results = []
    for bf16 in (False, True):
        model.zero_grad(set_to_none=True)
        with cpu_autocast(bf16):
            loss, _ = sft_loss(model, batch)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    model.zero_grad(set_to_none=True)
    assert seen and set(seen) == {torch.float32}
    (loss32, grads32), (loss16, grads16) = results
    assert loss16 != loss32 and loss16 == pytest.approx(loss32, rel=2e-2)  # bf16 ran, and stayed close
    flat32 = torch.cat([g.flatten() for g in grads32])
    flat16 = torch.cat([g.flatten() for g in grads16])
    assert torch.nn.functional.cosine_similarity(flat32, flat16, dim=0) > 0.99


def _spec(train_file: Path, out: Path, **kw: object) -> TrainingSpec:
    base = TrainingSpec(
        "ftjob_pack",
        "local:micro-chat",
        train_file,
        None,
        out,
        n_epochs=2,
        batch_size=4,
        metrics_every_n_steps=1,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_packed_training_run_matches_padded_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole job: same steps, per-step losses and checkpoint metrics within float tolerance, same tokens."""
    data = write_jsonl(tmp_path / "train.jsonl", _rows_with_weight_zero() + chat_rows(12, offset=50))
    runs: dict[str, Recorder] = {}
    tokens: dict[str, int] = {}
    # The layout is what is compared: fp32 (under bf16 the padded layout's attention runs in bf16, the packed
    # one's in fp32, a difference of precision, not of layout).
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    for mode in ("off", "on"):
        monkeypatch.setenv(PACKING_ENV, mode)
        runs[mode] = Recorder()
        tokens[mode] = train(_spec(data, tmp_path / mode), runs[mode]).trained_tokens
    padded, packed = runs["off"].metric_losses(), runs["on"].metric_losses()
    assert [s for s, _ in packed] == [s for s, _ in padded] and len(packed) == 10
    for (_, a), (_, b) in zip(padded, packed, strict=True):
        assert b == pytest.approx(a, rel=1e-4)  # ten optimizer steps of float-order differences
    for (_, ma, _), (_, mb, _) in zip(runs["off"].checkpoints, runs["on"].checkpoints, strict=True):
        assert mb["full_valid_loss"] == pytest.approx(ma["full_valid_loss"], rel=1e-4)
    assert tokens["on"] == tokens["off"]


def test_models_whose_attention_would_not_see_the_segments_stay_padded() -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    small = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    small |= {"num_attention_heads": 2, "num_key_value_heads": 1}
    assert supports_packing(Qwen2ForCausalLM(Qwen2Config(**small)))
    windowed = Qwen2ForCausalLM(Qwen2Config(**small, use_sliding_window=True, sliding_window=8))
    assert not supports_packing(windowed)  # its layers attend through a window the segments know nothing of
    eager_custom = Qwen2ForCausalLM(Qwen2Config(**small))
    eager_custom.config._attn_implementation = "flex_attention"
    assert not supports_packing(eager_custom)


def test_a_varlen_kernel_that_refuses_falls_back_once() -> None:
    """Where the flash varlen kernel does not run (here: no CUDA), the case is remembered and SDPA is used."""
    from backend.trainer import packing

    q = torch.randn(1, 2, 6, 8)
    seg = packing.Segments((0, 2, 6), torch.tensor([0, 2, 6], dtype=torch.int32), 4)
    assert packing._varlen(q, q, q, seg, None, False) is None
    assert False in packing._varlen_ok.values()
