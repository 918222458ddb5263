"""Reading training JSONL (chat or preference), encoding it, and length-bucketed deterministic batching.

Reading and encoding need no torch (the cost estimator counts tokens with them); the batching functions
import it when called.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from backend.trainer.chat import ChatFormat
from backend.trainer.spec import TrainingError

if TYPE_CHECKING:
    import torch

IGNORE = -100
# Shuffle, then sort by length inside windows of this many batches (as HF group_by_length): little padding.
BUCKET_WINDOW_BATCHES = 50


@dataclass(frozen=True)
class SFTExample:
    """One supervised example: token ids and which of them carry loss."""

    input_ids: list[int]
    loss_mask: list[int]

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        """Tokens one training pass over this example processes (its share of the job's trained_tokens)."""
        return self.length


@dataclass(frozen=True)
class PreferenceExample:
    """One preference pair sharing a prompt: full sequences and completion masks for both outputs."""

    chosen: SFTExample
    rejected: SFTExample

    @property
    def length(self) -> int:
        return max(self.chosen.length, self.rejected.length)

    @property
    def trained_tokens(self) -> int:
        """Both full sequences go through the model on every pass, so both are counted."""
        return self.chosen.length + self.rejected.length


Example = SFTExample | PreferenceExample


def _read_jsonl(path: Path, param: str) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise TrainingError("invalid_training_file", f"{param} {path} does not exist", param)
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrainingError(
                    "invalid_training_file", f"{path.name}:{lineno}: invalid JSON: {exc.msg}", param
                ) from exc
            if not isinstance(obj, dict):
                raise TrainingError(
                    "invalid_training_file", f"{path.name}:{lineno}: not a JSON object", param
                )
            rows.append((lineno, obj))
    return rows


def _check_messages(messages: Any, where: str, param: str) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise TrainingError("invalid_training_file", f"{where}: 'messages' must be a non-empty list", param)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise TrainingError(
                "invalid_training_file", f"{where}: messages[{i}] needs a string 'role'", param
            )
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            raise TrainingError(
                "invalid_training_file", f"{where}: messages[{i}].content must be a string", param
            )
        if content is None and not m.get("tool_calls"):
            raise TrainingError("invalid_training_file", f"{where}: messages[{i}] has no content", param)
    return messages


def load_examples(
    path: Path, method: Literal["supervised", "dpo"], fmt: ChatFormat, param: str
) -> tuple[list[Example], int]:
    """Parse and encode a dataset; returns the examples and how many were skipped (no trainable tokens)."""
    examples: list[Example] = []
    skipped = 0
    for lineno, obj in _read_jsonl(path, param):
        where = f"{path.name}:{lineno}"
        if method == "supervised":
            messages = _check_messages(obj.get("messages"), where, param)
            if not any(m["role"] == "assistant" for m in messages):
                raise TrainingError("invalid_training_file", f"{where}: no assistant message", param)
            enc = fmt.encode_chat(messages)
            if sum(enc.loss_mask[1:]) == 0:  # position 0 is never predicted
                skipped += 1
                continue
            examples.append(SFTExample(enc.input_ids, enc.loss_mask))
        else:
            examples.append(_preference_example(obj, fmt, where, param))
    if not examples:
        raise TrainingError("invalid_training_file", f"{param} has no example with trainable tokens", param)
    return examples, skipped


def _preference_example(obj: dict[str, Any], fmt: ChatFormat, where: str, param: str) -> PreferenceExample:
    inp = obj.get("input")
    if not isinstance(inp, dict):
        raise TrainingError(
            "invalid_training_file", f"{where}: preference example needs an 'input' object", param
        )
    messages = _check_messages(inp.get("messages"), where, param)
    outs = []
    for key in ("preferred_output", "non_preferred_output"):
        out = obj.get(key)
        if not isinstance(out, list) or len(out) != 1 or not isinstance(out[0], dict):
            raise TrainingError(
                "invalid_training_file", f"{where}: '{key}' must be a list of one message", param
            )
        outs.append(out[0])
    prompt = fmt.encode_prompt(messages)
    seqs = []
    for out in outs:
        completion = fmt.encode_completion(out)[: fmt.max_seq_len - 1]
        keep = fmt.max_seq_len - len(completion)
        p = prompt[-keep:]
        seqs.append(SFTExample(p + completion, [0] * len(p) + [1] * len(completion)))
    return PreferenceExample(seqs[0], seqs[1])


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Deterministic batches for one epoch: seeded shuffle, sort by length within windows, shuffle batches."""
    import torch

    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    window = batch_size * BUCKET_WINDOW_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in perm]


@dataclass
class Batch:
    """A batch of sequences as tensors; labels are IGNORE where no loss applies.

    Padded (`collate`): one right-padded row per sequence, `attention_mask` marks the real tokens. Packed
    (`pack`): one row holding every sequence back to back, `position_ids` restarting at 0 for each and
    `bounds` (0, end_1, ..., end_n) saying where each ends; no padding and no mask.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    labels: torch.Tensor
    n_tokens: int  # real (non-padding) tokens
    position_ids: torch.Tensor | None = None
    bounds: tuple[int, ...] | None = None

    @property
    def n_sequences(self) -> int:
        return len(self.bounds) - 1 if self.bounds is not None else int(self.labels.shape[0])

    def sequence_index(self) -> torch.Tensor:
        """For each position of `labels`, the index of the sequence it belongs to (same shape)."""
        import torch

        if self.bounds is None:
            rows = torch.arange(self.labels.shape[0]).unsqueeze(1)
            return rows.expand_as(self.labels)
        lengths = torch.tensor([e - s for s, e in zip(self.bounds[:-1], self.bounds[1:], strict=True)])
        return torch.repeat_interleave(torch.arange(len(lengths)), lengths).unsqueeze(0)


def collate(seqs: list[SFTExample], pad_id: int) -> Batch:
    """Pad a list of sequences to the longest one."""
    import torch

    width = max(s.length for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    for row, s in enumerate(seqs):
        n = s.length
        t = torch.tensor(s.input_ids, dtype=torch.long)
        ids[row, :n] = t
        attn[row, :n] = 1
        labels[row, :n] = torch.where(torch.tensor(s.loss_mask, dtype=torch.bool), t, IGNORE)
    return Batch(ids, attn, labels, int(attn.sum()))


def pack(seqs: list[SFTExample], pad_id: int) -> Batch:
    """Put the sequences back to back in one row (no padding); positions restart for each sequence.

    A sequence's first token is never a target (in a padded row nothing precedes it), so its label is
    IGNORE: the previous sequence's last position predicts nothing across the boundary.
    """
    import torch

    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    bounds = [0]
    for s in seqs:
        ids += s.input_ids
        labels += [IGNORE] + [
            t if m else IGNORE for t, m in zip(s.input_ids[1:], s.loss_mask[1:], strict=True)
        ]
        positions += range(s.length)
        bounds.append(len(ids))
    del pad_id  # nothing to pad; kept so that pack and collate are interchangeable
    return Batch(
        torch.tensor([ids], dtype=torch.long),
        None,
        torch.tensor([labels], dtype=torch.long),
        len(ids),
        torch.tensor([positions], dtype=torch.long),
        tuple(bounds),
    )
