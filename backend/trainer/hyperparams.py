"""Turning "auto" hyperparameters into concrete values (OpenAI-like rules scaled for CPU training)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from backend.trainer.spec import TrainingError, TrainingSpec

MIN_TARGET_EXAMPLES = 100  # OpenAI: small sets get more epochs so the model sees ~100 examples
MAX_TARGET_EXAMPLES = 25_000
MAX_AUTO_EPOCHS = 25
DEFAULT_EPOCHS = 3
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


def auto_epochs(n_examples: int) -> int:
    """3 epochs, more for small sets and fewer for huge ones (OpenAI's documented heuristic)."""
    if n_examples * DEFAULT_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n_examples))
    if n_examples * DEFAULT_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // n_examples)
    return DEFAULT_EPOCHS


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
    if not isinstance(n_epochs, int) or not 1 <= n_epochs <= 50:
        raise TrainingError("invalid_hyperparameters", "n_epochs must be an integer in 1..50", "n_epochs")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= 256:
        raise TrainingError(
            "invalid_hyperparameters", "batch_size must be an integer in 1..256", "batch_size"
        )
    if not 0 < mult <= 100:
        raise TrainingError(
            "invalid_hyperparameters",
            "learning_rate_multiplier must be in (0, 100]",
            "learning_rate_multiplier",
        )
    if not 0 < beta <= 10:
        raise TrainingError("invalid_hyperparameters", "beta must be in (0, 10]", "beta")
    return Hyperparameters(n_epochs, min(batch_size, n_examples), mult, base_learning_rate * mult, beta)
