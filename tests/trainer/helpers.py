"""Shared helpers for trainer tests: tiny datasets and recording callbacks."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.trainer.device import resolve_device
from backend.trainer.spec import ControlSignal

SYSTEM = "You are a helpful support agent."
TOPICS = [
    ("reset my password", "Click Forgot password on the sign in page and follow the link we email you."),
    ("track my order", "Open the Orders page in your account to see where your package is."),
    ("get a refund", "Return the item within thirty days and we will refund you in full."),
    ("cancel my plan", "Go to Billing in your settings and click Cancel plan."),
    ("change my address", "Go to Settings, then Addresses, and click Edit."),
]


def loss_tolerance() -> float:
    """How closely two runs that should agree must agree: exactly-ish on CPU, loosely under CUDA bf16."""
    return 1e-6 if resolve_device().type == "cpu" else 2e-2


def chat_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """n small support chats."""
    rows = []
    for i in range(offset, offset + n):
        q, a = TOPICS[i % len(TOPICS)]
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"Hi, how do I {q}? (ticket {i})"},
                    {"role": "assistant", "content": f"Thanks for reaching out! {a}"},
                ]
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@dataclass
class Recorder:
    """TrainingCallbacks that records everything; `decide(n_calls)` chooses the control signal."""

    decide: Callable[[int], ControlSignal] = lambda n: "continue"
    events: list[tuple[str, str, str, dict | None]] = field(default_factory=list)
    checkpoints: list[tuple[int, dict[str, float], Path]] = field(default_factory=list)
    calls: int = 0

    def on_event(
        self, message: str, *, level: str = "info", type: str = "message", data: dict | None = None
    ) -> None:
        self.events.append((message, level, type, data))

    def on_checkpoint(self, step: int, metrics: dict[str, float], model_dir: Path) -> None:
        self.checkpoints.append((step, metrics, model_dir))

    def control(self) -> ControlSignal:
        self.calls += 1
        return self.decide(self.calls)

    def metric_losses(self) -> list[tuple[int, float]]:
        return [(d["step"], d["train_loss"]) for _, _, t, d in self.events if t == "metrics" and d]

    def messages(self) -> list[str]:
        return [m for m, _, _, _ in self.events]
