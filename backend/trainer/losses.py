"""Forward passes that only project the hidden states that carry loss onto the vocabulary (saves compute)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from backend.trainer.data import IGNORE, Batch
from backend.trainer.device import autocast, to_device
from backend.trainer.packing import Segments, packed_attention


@dataclass
class TokenStats:
    """Summed loss / correct predictions / token count, so windows can be averaged token-weighted."""

    loss_sum: torch.Tensor
    correct: torch.Tensor  # kept on the device until a metrics window is read
    count: int


def _backbone_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    wrapped: Any = model
    inner: Any = wrapped.get_base_model() if hasattr(wrapped, "get_base_model") else wrapped
    config = getattr(inner, "config", None)
    if config is not None and getattr(config, "final_logit_softcapping", None):
        return None  # head output is post-processed; use the model's own forward
    backbone = getattr(inner, getattr(inner, "base_model_prefix", "model"), None)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if backbone is None or head is None or backbone is inner:
        return None
    return backbone, head


def _inputs(batch: Batch, device: torch.device | None) -> dict[str, torch.Tensor]:
    """The model's keyword inputs for `batch` on `device`: a padding mask, or packed positions."""
    dev = device or torch.device("cpu")
    out = {"input_ids": to_device(batch.input_ids, dev)}
    if batch.bounds is None:
        assert batch.attention_mask is not None
        out["attention_mask"] = to_device(batch.attention_mask, dev)
    else:
        assert batch.position_ids is not None
        out["position_ids"] = to_device(batch.position_ids, dev)
    return out


def _attention_scope(
    model: torch.nn.Module, batch: Batch, device: torch.device | None
) -> contextlib.AbstractContextManager[Any]:
    """Packed batches: attention inside each sequence; padded ones need nothing (the mask does it)."""
    b = batch.bounds
    if b is None:
        return contextlib.nullcontext()
    cu = None
    if device is not None and device.type == "cuda":
        cu = to_device(torch.tensor(b, dtype=torch.int32), device)
    max_len = max(end - start for start, end in zip(b[:-1], b[1:], strict=True))
    return packed_attention(model, Segments(b, cu, max_len))


def selected_logits(
    model: torch.nn.Module, batch: Batch, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at positions whose next token carries loss, their targets, and each one's sequence index.

    `batch` is on the CPU; with a CUDA `device` the selection is computed there first and only index
    tensors travel, so the step never waits on the GPU (a boolean mask on the GPU would sync).
    """
    if device is not None and device.type == "cuda":
        return _selected_logits_cuda(model, batch, device)
    targets_all = batch.labels[:, 1:]
    select = targets_all != IGNORE
    rows = batch.sequence_index()[:, 1:][select]
    parts = _backbone_and_head(model)
    with _attention_scope(model, batch, device):
        if parts is None:
            logits = model(**_inputs(batch, device)).logits
            return logits[:, :-1][select], targets_all[select], rows
        backbone, head = parts
        hidden = backbone(**_inputs(batch, device)).last_hidden_state
    return head(hidden[:, :-1][select]), targets_all[select], rows


def selection_indices(
    labels: torch.Tensor, sequence_index: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For positions whose next token carries loss: sequence index (the row, unless `sequence_index` maps
    positions to sequences), flat index into the (rows * width) grid of per-position outputs, and the target
    token; ordered as boolean-mask indexing orders them (row-major)."""
    targets_all = labels[:, 1:]
    where = (targets_all != IGNORE).nonzero()
    rows, cols = where[:, 0].contiguous(), where[:, 1].contiguous()
    seq = rows if sequence_index is None else sequence_index[:, 1:][rows, cols].contiguous()
    return seq, rows * labels.shape[1] + cols, targets_all[rows, cols]


def _selected_logits_cuda(
    model: torch.nn.Module, batch: Batch, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    index = batch.sequence_index() if batch.bounds is not None else None
    rows, flat, targets = (to_device(t, device) for t in selection_indices(batch.labels, index))
    inputs = _inputs(batch, device)
    parts = _backbone_and_head(model)
    with autocast(device), _attention_scope(model, batch, device):
        if parts is None:
            logits = model(**inputs).logits
            return logits.reshape(-1, logits.shape[-1]).index_select(0, flat), targets, rows
        backbone, head = parts
        hidden = backbone(**inputs).last_hidden_state
        return head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat)), targets, rows


# fp32 elements of one chunk of logits in the CPU cross-entropy (32 MiB): a chunk stays in cache-sized pieces
# instead of whole (tokens x vocabulary) fp32 copies.
CE_CHUNK_ELEMENTS = 1 << 23


class _SummedCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy and correct-prediction count of (tokens, vocab) logits in one pass over row chunks.

    The gradient (softmax - one-hot, in the logits' dtype) is written during the forward pass, so the
    backward pass is one scaling: no fp32 copy of all logits, no separate log-softmax, NLL and argmax passes
    and no zero-filled NLL gradient (on a 152k vocabulary those took ~10% of a 0.5B LoRA step on the CPU).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, logits: torch.Tensor, targets: torch.Tensor, with_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, vocab = logits.shape
        grad = torch.empty_like(logits) if with_grad else None
        loss_sum = torch.zeros((), dtype=torch.float32)
        correct = torch.zeros((), dtype=torch.long)
        rows = max(1, CE_CHUNK_ELEMENTS // max(vocab, 1))
        for start in range(0, n, rows):
            end = min(n, start + rows)
            x = logits[start:end].to(torch.float32, copy=True)  # a copy even for fp32: changed in place below
            t = targets[start:end].unsqueeze(1)
            top, best = x.max(dim=-1)  # the first maximal index, as argmax gives it
            correct += (best == t.squeeze(1)).sum()
            target_logit = x.gather(1, t).squeeze(1)
            e = x.sub_(top.unsqueeze(1)).exp_()
            total = e.sum(dim=-1)
            loss_sum += (top + total.log() - target_logit).sum()
            if grad is not None:
                e.div_(total.unsqueeze(1)).scatter_add_(1, t, e.new_full(t.shape, -1.0))
                grad[start:end] = e
        ctx.save_for_backward(grad if grad is not None else logits.new_empty(0))
        ctx.mark_non_differentiable(correct)
        return loss_sum, correct

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_correct: Any) -> tuple[Any, None, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad.mul_(grad_loss.to(grad.dtype)), None, None


def sft_loss(
    model: torch.nn.Module, batch: Batch, device: torch.device | None = None
) -> tuple[torch.Tensor, TokenStats]:
    """Mean token cross-entropy over trained tokens, plus stats for metric windows (all fp32)."""
    logits, targets, _ = selected_logits(model, batch, device)
    count = int(targets.numel())
    if logits.is_cuda:
        logits = logits.float()  # bf16 autocast output
        loss_sum = F.cross_entropy(logits, targets, reduction="sum")
        correct = (logits.argmax(dim=-1) == targets).sum()  # a tensor: reading it would sync the GPU
    else:
        with_grad = torch.is_grad_enabled() and logits.requires_grad
        loss_sum, correct = _SummedCrossEntropy.apply(logits, targets, with_grad)
    return loss_sum / max(count, 1), TokenStats(loss_sum.detach(), correct, count)


def sequence_logps(model: torch.nn.Module, batch: Batch, device: torch.device | None = None) -> torch.Tensor:
    """Sum of log-probabilities of the trained tokens of each row (fp32, on the model's device)."""
    logits, targets, rows = selected_logits(model, batch, device)
    token_logp = -F.cross_entropy(logits.float(), targets, reduction="none")
    out = torch.zeros(batch.n_sequences, dtype=token_logp.dtype, device=token_logp.device)
    return out.index_add(0, rows, token_logp)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, TokenStats]:
    """Sigmoid DPO loss; 'correct' counts pairs whose implicit preferred reward beats the other."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    losses = -F.logsigmoid(beta * margin)
    n = int(losses.numel())
    return losses.mean(), TokenStats(losses.detach().sum(), (margin > 0).sum(), n)
