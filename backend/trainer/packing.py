"""Packed batches: a step's examples side by side in one row, attention kept inside each example.

Each example keeps its own positions (0..len-1) and attends only to its own earlier tokens, so a packed step
computes what the padded step computes, minus the padding and the padding mask. Attention runs per example:
`torch.nn.attention.varlen.varlen_attn` (flash, one kernel) on CUDA where it works, else one causal SDPA call
per example (on the CPU that is cheaper than one block-diagonal mask over the whole row: measured in
docs/performance.md).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

PACKING_ENV = "FTPIPE_TRAINER_PACKING"
ATTN_NAME = "ftpipe_packed"


@dataclass(frozen=True)
class Segments:
    """Where each example sits in a packed row: bounds (0, end_1, ..., end_n) as Python ints (read without
    touching the device) and, for the CUDA kernel, the same as an int32 device tensor."""

    bounds: tuple[int, ...]
    cu_seqlens: torch.Tensor | None = None
    max_len: int = 0


_current: contextvars.ContextVar[Segments | None] = contextvars.ContextVar("ftpipe_segments", default=None)
_varlen_ok: dict[str, bool] = {}


def packing_enabled() -> bool:
    """$FTPIPE_TRAINER_PACKING: on (default) or off (padded batches, the pre-packing layout)."""
    value = os.environ.get(PACKING_ENV, "").strip().lower()
    return value not in ("0", "off", "false", "no")


def supports_packing(model: torch.nn.Module) -> bool:
    """True for models whose attention goes through transformers' attention interface, with full causal
    attention in every layer (a sliding window or custom attention code would not see the segments)."""
    wrapped: Any = model
    inner: Any = wrapped.get_base_model() if hasattr(wrapped, "get_base_model") else wrapped
    config = getattr(inner, "config", None)
    if config is None or not getattr(inner, "_supports_attention_backend", False):
        return False
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    layer_types = getattr(config, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        return False
    return not (getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None))


def _configs(model: torch.nn.Module) -> list[Any]:
    seen: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen.setdefault(id(config), config)
    return list(seen.values())


@contextlib.contextmanager
def packed_attention(model: torch.nn.Module, segments: Segments) -> Iterator[None]:
    """Within the block, `model`'s attention layers attend inside `segments` only (forward pass only: the
    backward pass replays the recorded kernels and needs no switch)."""
    _register()
    configs = _configs(model)
    before = [c._attn_implementation for c in configs]
    token = _current.set(segments)
    try:
        for c in configs:
            c._attn_implementation = ATTN_NAME
        yield
    finally:
        for c, name in zip(configs, before, strict=True):
            c._attn_implementation = name
        _current.reset(token)


def _register() -> None:
    from transformers import AttentionInterface

    if ATTN_NAME not in AttentionInterface._global_mapping:
        # No mask function is registered under this name, so transformers builds no mask for it.
        AttentionInterface.register(ATTN_NAME, _attention)


def _attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: query (1, heads, T, dim), key/value (1, kv_heads, T, dim) -> output
    (1, T, heads, dim), causal inside each segment."""
    seg = _current.get()
    if seg is None:
        raise RuntimeError("packed attention called outside packed_attention()")
    gqa = key.shape[1] != query.shape[1]
    if query.is_cuda and seg.cu_seqlens is not None:
        out = _varlen(query, key, value, seg, scaling, gqa)
        if out is not None:
            return out.unsqueeze(0), None
    if not query.is_cuda and torch.is_autocast_enabled("cpu"):
        # Under CPU bf16 autocast SDPA would run in bf16, and the CPU's bf16 flash attention backward is 2-3x
        # slower than its fp32 one at these lengths: attention runs in fp32 (autocast off), only the matrix
        # products of the linear layers stay bf16 (the next projection casts this output back).
        with torch.autocast("cpu", enabled=False):
            return _per_example(query.float(), key.float(), value.float(), seg, dropout, scaling, gqa), None
    return _per_example(query, key, value, seg, dropout, scaling, gqa), None


def _per_example(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    seg: Segments,
    dropout: float,
    scaling: float | None,
    gqa: bool,
) -> torch.Tensor:
    """One causal SDPA call per segment, (1, T, heads, dim)."""
    # split, not slicing: the backward of a split is one concatenation, that of n slices n zero-filled
    # full-size gradients added up.
    lengths = [end - start for start, end in zip(seg.bounds[:-1], seg.bounds[1:], strict=True)]
    parts = [
        F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa
        )
        for q, k, v in zip(
            query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2), strict=True
        )
    ]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous()


def _varlen(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    seg: Segments,
    scaling: float | None,
    gqa: bool,
) -> torch.Tensor | None:
    """Flash varlen attention, (T, heads, dim); None where the kernel does not run (an older GPU, fp32, a head
    size it lacks): remembered per case, and the caller falls back to per-example SDPA."""
    # Under autocast SDPA would run in bf16; the varlen kernel is not an autocast op, so cast here (the rotary
    # embeddings of an fp32 model hand over fp32 queries).
    cu = seg.cu_seqlens
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else query.dtype
    case = f"{query.device}:{dtype}:{query.shape[-1]}:gqa={gqa}"
    if cu is None or not _varlen_ok.get(case, True):
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn

        q, k, v = (t[0].transpose(0, 1).to(dtype).contiguous() for t in (query, key, value))
        out = varlen_attn(
            q,
            k,
            v,
            cu,
            cu,
            seg.max_len,
            seg.max_len,
            scale=scaling,
            window_size=(-1, 0),
            enable_gqa=gqa,
        )
    except (ImportError, RuntimeError, ValueError, NotImplementedError):
        _varlen_ok[case] = False
        return None
    _varlen_ok[case] = True
    assert isinstance(out, torch.Tensor)
    return out
