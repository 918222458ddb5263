"""Public data types shared by the trainer and the backend worker that drives it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

ControlSignal = Literal["continue", "pause", "cancel"]


@dataclass(frozen=True)
class TrainingSpec:
    """Everything the trainer needs to run (or resume) one fine-tuning job."""

    job_id: str
    base_model: str  # "local:tiny-chat" | "local:micro-chat" | "local:/abs/path/to/hf-model-dir"
    training_file: Path
    validation_file: Path | None
    output_dir: Path  # job's own dir: checkpoints/, final/, state/ for resume
    method: Literal["supervised", "dpo"] = "supervised"
    n_epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    learning_rate_multiplier: float | Literal["auto"] = "auto"
    beta: float | Literal["auto"] = "auto"
    seed: int = 0
    resume: bool = False
    metrics_every_n_steps: int = 10
    # Stop after this many optimizer steps (a checkpoint and the final model are still written). None: no cap.
    max_steps: int | None = None


class TrainingCallbacks(Protocol):
    """How the trainer reports progress and learns about pause/cancel requests."""

    def on_event(
        self, message: str, *, level: str = "info", type: str = "message", data: dict | None = None
    ) -> None: ...

    def on_checkpoint(self, step: int, metrics: dict[str, float], model_dir: Path) -> None: ...

    def control(self) -> ControlSignal: ...  # polled between steps; must be cheap to call


@dataclass
class TrainingOutcome:
    """Result of a `train` call."""

    status: Literal["succeeded", "paused", "cancelled"]
    trained_tokens: int
    final_model_dir: Path | None
    resolved_hyperparameters: dict[str, float | int] = field(default_factory=dict)


class TrainingError(Exception):
    """A failure that should fail the job with an OpenAI-style error object."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param

    def __repr__(self) -> str:
        return f"TrainingError(code={self.code!r}, message={self.message!r}, param={self.param!r})"


class ContextTooLong(ValueError):
    """The prompt does not fit the context window and truncation was not allowed."""

    def __init__(self, prompt_tokens: int, limit: int) -> None:
        super().__init__(
            f"The input is {prompt_tokens} tokens; this model takes at most {limit} with the requested "
            "output length (set truncation to 'auto' to drop the oldest tokens)."
        )
        self.prompt_tokens = prompt_tokens
        self.limit = limit
