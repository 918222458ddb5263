"""Turning "auto" hyperparameters into concrete values (OpenAI-like rules scaled for CPU training)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from backend.trainer.spec import TrainingError, TrainingSpec
from contract import wire
from contract.wire import auto_epochs

DEFAULT_BETA = 0.1


@dataclass(frozen=True)
class Hyperparameters:
    """Resolved values used by the training loop."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float
    beta: float

    def public(self, method: str) -> dict[str, float | int]:
        """What the job reports as its resolved hyperparameters."""
        out: dict[str, float | int] = {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }
        if method == "dpo":
            out["beta"] = self.beta
        return out


def auto_batch_size(n_examples: int) -> int:
    """Power of two near n/32, between 2 and 16: a few dozen steps per epoch on small sets."""
    target = max(1.0, n_examples / 32)
    return int(min(16, max(2, 2 ** round(math.log2(target)))))


def resolve(spec: TrainingSpec, n_examples: int, base_learning_rate: float) -> Hyperparameters:
    """Resolve every "auto" and validate explicit values (raises TrainingError naming the field)."""
    n_epochs = auto_epochs(n_examples) if spec.n_epochs == "auto" else spec.n_epochs
    batch_size = auto_batch_size(n_examples) if spec.batch_size == "auto" else spec.batch_size
    mult = 1.0 if spec.learning_rate_multiplier == "auto" else float(spec.learning_rate_multiplier)
    beta = DEFAULT_BETA if spec.beta == "auto" else float(spec.beta)
    if not isinstance(n_epochs, int) or not wire.N_EPOCHS_MIN <= n_epochs <= wire.N_EPOCHS_MAX:
        raise TrainingError(
            "invalid_hyperparameters",
            f"n_epochs must be an integer in {wire.N_EPOCHS_MIN}..{wire.N_EPOCHS_MAX}",
            "n_epochs",
        )
    if (
        not isinstance(batch_size, int)
        or not wire.BATCH_SIZE_MIN <= batch_size <= wire.BACKEND_BATCH_SIZE_MAX
    ):
        raise TrainingError(
            "invalid_hyperparameters",
            f"batch_size must be an integer in {wire.BATCH_SIZE_MIN}..{wire.BACKEND_BATCH_SIZE_MAX}",
            "batch_size",
        )
    if not wire.LEARNING_RATE_MULTIPLIER_GT < mult <= wire.BACKEND_LEARNING_RATE_MULTIPLIER_MAX:
        raise TrainingError(
            "invalid_hyperparameters",
            f"learning_rate_multiplier must be in ({wire.LEARNING_RATE_MULTIPLIER_GT:g}, "
            f"{wire.BACKEND_LEARNING_RATE_MULTIPLIER_MAX:g}]",
            "learning_rate_multiplier",
        )
    if not wire.BETA_GT < beta <= wire.BACKEND_BETA_MAX:
        raise TrainingError(
            "invalid_hyperparameters",
            f"beta must be in ({wire.BETA_GT:g}, {wire.BACKEND_BETA_MAX:g}]",
            "beta",
        )
    return Hyperparameters(n_epochs, min(batch_size, n_examples), mult, base_learning_rate * mult, beta)
