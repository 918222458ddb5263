"""Resumable training state on disk: written atomically, only the latest one kept."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

STATE_DIR = "state"
LATEST = "LATEST"


@dataclass
class Progress:
    """Where the loop is, plus the metric accumulators that must survive a pause."""

    epoch: int = 0  # epoch currently being trained (0-based)
    batch_in_epoch: int = 0  # batches of `epoch` already done
    step: int = 0  # optimizer steps done
    trained_tokens: int = 0
    window: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss_sum, correct, count
    epoch_window: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])


def save_state(output_dir: Path, payload: dict[str, Any], progress: Progress) -> Path:
    """Write `state/state-<step>.pt`, point LATEST at it, then drop older states."""
    sdir = output_dir / STATE_DIR
    sdir.mkdir(parents=True, exist_ok=True)
    name = f"state-{progress.step:06d}.pt"
    tmp = sdir / f".{name}.tmp"
    torch.save({**payload, "progress": asdict(progress)}, tmp)
    os.replace(tmp, sdir / name)
    latest_tmp = sdir / f".{LATEST}.tmp"
    latest_tmp.write_text(name)
    os.replace(latest_tmp, sdir / LATEST)
    for old in sdir.glob("state-*.pt"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return sdir / name


def load_latest_state(output_dir: Path) -> tuple[dict[str, Any], Progress] | None:
    """The most recent resumable state, or None if there is none."""
    sdir = output_dir / STATE_DIR
    pointer = sdir / LATEST
    if not pointer.is_file():
        return None
    path = sdir / pointer.read_text().strip()
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    progress = Progress(**payload.pop("progress"))
    return payload, progress
