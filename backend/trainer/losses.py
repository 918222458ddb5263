"""Forward passes that only project the hidden states that carry loss onto the vocabulary (saves compute)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from backend.trainer.data import IGNORE, Batch
from backend.trainer.device import autocast, to_device


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


def selected_logits(
    model: torch.nn.Module, batch: Batch, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at positions whose next token carries loss, their targets, and each one's row index.

    `batch` is on the CPU; with a CUDA `device` the selection is computed there first and only index
    tensors travel, so the step never waits on the GPU (a boolean mask on the GPU would sync).
    """
    if device is not None and device.type == "cuda":
        return _selected_logits_cuda(model, batch, device)
    targets_all = batch.labels[:, 1:]
    select = targets_all != IGNORE
    rows = torch.arange(batch.labels.shape[0]).unsqueeze(1).expand_as(select)[select]
    parts = _backbone_and_head(model)
    if parts is None:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return logits[:, :-1][select], targets_all[select], rows
    backbone, head = parts
    hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    return head(hidden[:, :-1][select]), targets_all[select], rows


def selection_indices(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For positions whose next token carries loss: row index, flat index into the (rows * width) grid of
    per-position outputs, and the target token; ordered as boolean-mask indexing orders them (row-major)."""
    targets_all = labels[:, 1:]
    where = (targets_all != IGNORE).nonzero()
    rows, cols = where[:, 0].contiguous(), where[:, 1].contiguous()
    return rows, rows * labels.shape[1] + cols, targets_all[rows, cols]


def _selected_logits_cuda(
    model: torch.nn.Module, batch: Batch, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, flat, targets = (to_device(t, device) for t in selection_indices(batch.labels))
    input_ids = to_device(batch.input_ids, device)
    attention_mask = to_device(batch.attention_mask, device)
    parts = _backbone_and_head(model)
    with autocast(device):
        if parts is None:
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            return logits.reshape(-1, logits.shape[-1]).index_select(0, flat), targets, rows
        backbone, head = parts
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat)), targets, rows


def sft_loss(
    model: torch.nn.Module, batch: Batch, device: torch.device | None = None
) -> tuple[torch.Tensor, TokenStats]:
    """Mean token cross-entropy over trained tokens, plus stats for metric windows (all fp32)."""
    logits, targets, _ = selected_logits(model, batch, device)
    logits = logits.float()  # a no-op on CPU; bf16 autocast output on CUDA
    loss_sum = F.cross_entropy(logits, targets, reduction="sum")
    count = int(targets.numel())
    correct = (logits.argmax(dim=-1) == targets).sum()  # a tensor: reading it would sync the GPU
    return loss_sum / max(count, 1), TokenStats(loss_sum.detach(), correct, count)


def sequence_logps(model: torch.nn.Module, batch: Batch, device: torch.device | None = None) -> torch.Tensor:
    """Sum of log-probabilities of the trained tokens of each row (fp32, on the model's device)."""
    logits, targets, rows = selected_logits(model, batch, device)
    token_logp = -F.cross_entropy(logits.float(), targets, reduction="none")
    out = torch.zeros(batch.labels.shape[0], dtype=token_logp.dtype, device=token_logp.device)
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
