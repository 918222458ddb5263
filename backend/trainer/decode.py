"""Greedy decoding without ``generate``'s per-token overhead: prefill once, then one lean step per token.

On the small built-in models HF ``generate`` spends most of each step on bookkeeping (logits processors,
stopping criteria, mask building, a KV cache grown by concatenation, i.e. copied whole every token). Here
the prefill is the model's own forward; each later step runs the model's own modules in the order its
forward does, over a preallocated KV cache, so every row gets the logits, hence the tokens, that
``generate`` gives it. Finished rows leave the batch, so it shrinks as replies end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch

# Model types whose decoder layer ``_step`` mirrors (tests/backend/test_decode.py checks each against generate).
MIRRORED_MODEL_TYPES = frozenset({"llama", "qwen2"})
# Generation-config fields that change nothing in greedy decoding with our explicit arguments; any other field
# set (repetition_penalty, suppress_tokens, ...) adds a logits processor, which only ``generate`` applies.
_NEUTRAL_GENERATION_FIELDS = frozenset(
    {
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "transformers_version",
        "do_sample",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "typical_p",
        "max_length",
        "max_new_tokens",
        "use_cache",
        "output_attentions",
        "output_hidden_states",
        "output_scores",
        "output_logits",
        "return_dict_in_generate",
    }
)

# Rows per prefill forward, grouped by prompt length: one forward pads every prompt to the batch's longest
# (an eval's 64 shortest prompts: 4,928 tokens for 2,343 real ones), chunks of similar lengths pad little.
# Measured on tiny-chat, 1 thread: 105 eval prompts' prefill 1.12 s CPU in two forwards, 0.68 s in chunks of 16.
PREFILL_ROWS = 16

OnTokens = Callable[[int, list[int]], None]
BeforeStep = Callable[[], None]


def lean_unsupported(model: Any) -> str | None:
    """Why ``LeanDecoder`` cannot stand in for ``generate`` on ``model`` (None when it can)."""
    config = model.config
    if config.model_type not in MIRRORED_MODEL_TYPES:
        return f"model type {config.model_type!r} is not one the lean decoder mirrors"
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return f"attention implementation {getattr(config, '_attn_implementation', None)!r} is not sdpa"
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
        return "the model has sliding-window layers"
    extra = _generation_settings(model) - _NEUTRAL_GENERATION_FIELDS
    if extra:
        return f"its generation config sets {', '.join(sorted(extra))}"
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "rotary_emb", "layers", "norm")
    if inner is None or not all(hasattr(inner, n) for n in needed) or not hasattr(model, "lm_head"):
        return "the model does not have the usual decoder layout"
    if not hasattr(sys.modules[type(inner.layers[0].self_attn).__module__], "apply_rotary_pos_emb"):
        return "its modeling module has no apply_rotary_pos_emb"
    return None


def _generation_settings(model: Any) -> set[str]:
    """The generation-config fields of ``model`` that differ from a default ``GenerationConfig``."""
    from transformers import GenerationConfig

    default = GenerationConfig().to_dict()
    own = model.generation_config.to_dict()
    # A field a default config lacks counts when it holds something (not None/False).
    return {
        k
        for k, v in own.items()
        if not k.startswith("_") and (v != default[k] if k in default else v not in (None, False))
    }


def _nothing() -> None:
    pass


class LeanDecoder:
    """Greedy decoding for one loaded model of a mirrored type (see ``lean_unsupported``)."""

    def __init__(self, model: Any) -> None:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        self.model = model
        self.inner = model.model
        self.layers = list(self.inner.layers)[: model.config.num_hidden_layers]
        module = sys.modules[type(self.layers[0].self_attn).__module__]
        self._rotary: Callable[..., tuple[torch.Tensor, torch.Tensor]] = module.apply_rotary_pos_emb
        self._attention: Callable[..., tuple[torch.Tensor, Any]] = ALL_ATTENTION_FUNCTIONS.get_interface(
            model.config._attn_implementation, module.eager_attention_forward
        )
        self.device: torch.device = next(model.parameters()).device

    def greedy(
        self,
        prompts: Sequence[list[int]],
        max_new: Sequence[int],
        stop: Collection[int],
        pad: int,
        *,
        on_tokens: OnTokens | None = None,
        sync_every: int | None = None,
        before_step: BeforeStep | None = None,
    ) -> list[list[int]]:
        """Each row's new tokens: up to its own ``max_new``, through its first ``stop`` token if any.

        Rows are left-padded into one batch (masked, positions counted from each row's first real token);
        ``on_tokens(row, ids)`` gets each row's tokens as they are read back. The host reads tokens back
        every ``sync_every`` steps (default: every step on the CPU, where it costs nothing; every 8 on an
        accelerator); a row that ended in between just runs a few steps more, its extra tokens unused.
        ``before_step()`` runs before the prefill and each step (the server re-fits its thread count there).
        """
        n = len(prompts)
        if n == 0:
            return []
        every = sync_every or (1 if self.device.type == "cpu" else 8)
        stops = set(stop)
        width = max(len(p) for p in prompts)
        _, mask, position = self._left_padded(prompts, pad, width)
        out: list[list[int]] = [[] for _ in range(n)]
        pace = before_step or _nothing
        capacity = width + max(max_new) + every
        with torch.inference_mode():
            pace()
            token, keys, values = self._prefill(prompts, pad, width, capacity)
            if max(max_new) <= 1:
                self._read_back([token], list(range(n)), [False] * n, out, max_new, stops, on_tokens)
                return out
            attend = torch.ones((n, capacity), dtype=torch.bool, device=self.device)
            attend[:, :width] = mask.bool()
            padded = [len(p) < width for p in prompts]
            rows = list(range(n))  # the original row of each batch row
            ended = [False] * n  # per batch row: its reply is complete (it leaves at the next compaction)
            position = position[:, -1:]
            length = width  # tokens in the cache
            pending = [token]
            while True:
                if len(pending) == every or length + 1 >= capacity:
                    self._read_back(pending, rows, ended, out, max_new, stops, on_tokens)
                    pending = []
                    gone = sum(ended)
                    if gone == len(rows):
                        break
                    # Dropping rows copies the cache, so wait until it shrinks the batch by a quarter.
                    if gone and gone * 4 >= len(rows):
                        keep = [j for j, e in enumerate(ended) if not e]
                        index = torch.tensor(keep, device=self.device)
                        keys = [k.index_select(0, index) for k in keys]
                        values = [v.index_select(0, index) for v in values]
                        attend = attend.index_select(0, index)
                        position = position.index_select(0, index)
                        token = token.index_select(0, index)
                        rows = [rows[j] for j in keep]
                        ended = [False] * len(rows)
                position = position + 1
                pace()
                # Like generate's mask: None (plain attention) unless a row has padding.
                step_mask = attend[:, None, None, : length + 1] if any(padded[r] for r in rows) else None
                logits = self._step(token, position, step_mask, keys, values, length)
                token = logits.to(dtype=torch.float32).argmax(-1)
                length += 1
                pending.append(token)
        return out

    def _prefill(
        self, prompts: Sequence[list[int]], pad: int, width: int, capacity: int
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Each row's first new token and (batch, heads, capacity, dim) key and value buffers holding its prompt
        right-aligned at ``width`` (left of it: zeros, masked), from forwards over rows of similar lengths."""
        from transformers import DynamicCache

        n = len(prompts)
        order = sorted(range(n), key=lambda r: len(prompts[r]))
        token = torch.empty(n, dtype=torch.long, device=self.device)
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        for start in range(0, n, PREFILL_ROWS):
            rows = order[start : start + PREFILL_ROWS]
            w = max(len(prompts[r]) for r in rows)
            ids, mask, position = self._left_padded([prompts[r] for r in rows], pad, w)
            cache = DynamicCache(config=self.model.config)
            first = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=position,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            index = torch.tensor(rows, device=self.device)
            token[index] = first.logits[:, -1].to(dtype=torch.float32).argmax(-1)
            layers: list[Any] = list(cache.layers)
            for i, layer in enumerate(layers):
                if i == len(keys):
                    # Zeros left of the prompts: a masked slot's weight is 0, and 0 * garbage could be NaN.
                    keys.append(self._buffer(layer.keys, n, width, capacity))
                    values.append(self._buffer(layer.values, n, width, capacity))
                keys[i][index, :, width - w : width] = layer.keys
                values[i][index, :, width - w : width] = layer.values
        return token, keys, values

    def _left_padded(
        self, prompts: Sequence[list[int]], pad: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids, attention mask and positions of ``prompts`` left-padded to ``width``; as generate derives
        the positions, counted from each row's first real token (a padded slot gets 0, masked anyway)."""
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        return ids, mask, (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)

    @staticmethod
    def _buffer(like: torch.Tensor, n: int, width: int, capacity: int) -> torch.Tensor:
        """A (n, heads, capacity, dim) buffer like ``like``, zero up to ``width``."""
        buf = like.new_empty((n, like.shape[1], capacity, like.shape[3]))
        buf[:, :, :width] = 0
        return buf

    @staticmethod
    def _read_back(
        pending: list[torch.Tensor],
        rows: list[int],
        ended: list[bool],
        out: list[list[int]],
        max_new: Sequence[int],
        stops: set[int],
        on_tokens: OnTokens | None,
    ) -> None:
        """Append the pending tokens of each unfinished row up to its end, marking the rows that ended."""
        steps = torch.stack(pending, 1).tolist()  # one host sync for all pending steps
        for j, row in enumerate(rows):
            if ended[j]:
                continue
            got = out[row]
            before = len(got)
            for t in steps[j]:
                got.append(t)
                if t in stops or len(got) >= max_new[row]:
                    ended[j] = True
                    break
            if on_tokens is not None:
                on_tokens(row, got[before:])

    def _step(
        self,
        token: torch.Tensor,
        position: torch.Tensor,
        mask: torch.Tensor | None,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        length: int,
    ) -> torch.Tensor:
        """Logits for one new token per row; writes its keys and values at ``length``."""
        n = token.shape[0]
        hidden = self.inner.embed_tokens(token[:, None])
        cos, sin = self.inner.rotary_emb(hidden, position)
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(n, 1, -1, attn.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(n, 1, -1, attn.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(n, 1, -1, attn.head_dim).transpose(1, 2)
            q, k = self._rotary(q, k, cos, sin)
            keys[i][:, :, length] = k[:, :, 0]
            values[i][:, :, length] = v[:, :, 0]
            o, _ = self._attention(
                attn,
                q,
                keys[i][:, :, : length + 1],
                values[i][:, :, : length + 1],
                mask,
                dropout=0.0,
                scaling=attn.scaling,
            )
            hidden = hidden + attn.o_proj(o.reshape(n, 1, -1).contiguous())
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = self.inner.norm(hidden)
        return self.model.lm_head(hidden[:, -1:, :])[:, -1]
