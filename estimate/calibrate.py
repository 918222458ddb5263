"""Training time of an embedded-model job with no history yet: a short calibration run of the real trainer.

The trainer runs the job's first ``CALIBRATION_STEPS`` steps (same model, data, validation file, batch size,
device and thread count as a backend worker on this machine, metrics at the backend's default cadence) into
a temporary folder. Its events give three timings: start-up (loading the model, encoding the data; DPO's
reference pass), the time per step (its share of a metrics event's validation pass included), and the end
of an epoch (evaluation + checkpoint). The job's time is start-up + steps x step time + epochs x epoch-end
time. Imports torch; ``ftpipe estimate`` runs it, a flow run does not.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from estimate.duration import DurationEstimate
from estimate.tokens import Epochs, Method

# One metrics interval at the backend's default cadence (BackendSettings.metrics_every_n_steps).
CALIBRATION_STEPS = 10


class _Clock:
    """Training callbacks that only note when each event happened."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []

    def on_event(
        self, message: str, *, level: str = "info", type: str = "message", data: dict | None = None
    ) -> None:
        self.events.append((time.monotonic(), message, dict(data or {})))

    def on_checkpoint(self, step: int, metrics: dict[str, float], model_dir: Path) -> None:
        return None

    def control(self) -> str:
        return "continue"

    def first(self, prefix: str) -> tuple[float, dict[str, Any]]:
        return next((t, d) for t, m, d in self.events if m.startswith(prefix))

    def last(self, prefix: str) -> float:
        return next(t for t, m, _ in reversed(self.events) if m.startswith(prefix))

    def step_times(self) -> list[float]:
        return [t for t, m, d in self.events if m.startswith("Step ")]


def calibrate(
    train_path: Path,
    model: str,
    method: Method,
    n_epochs: Epochs,
    batch_size: int | str = "auto",
    validation_path: Path | None = None,
) -> DurationEstimate:
    """Predict the job's training time from its first steps, run on this machine."""
    from backend.trainer.spec import TrainingSpec
    from backend.trainer.train import train

    clock = _Clock()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ftpipe-calibration-") as tmp:
        spec = TrainingSpec(
            job_id="ftjob_calibration",
            base_model=model,
            training_file=train_path,
            validation_file=validation_path,
            output_dir=Path(tmp),
            method=method,
            n_epochs=n_epochs,
            batch_size=batch_size,  # type: ignore[arg-type]
            metrics_every_n_steps=CALIBRATION_STEPS,
            max_steps=CALIBRATION_STEPS,
        )
        train(spec, clock)  # type: ignore[arg-type]
    finished = time.monotonic()
    started_at, plan = clock.first("Training started")
    total_steps = math.ceil(plan["n_examples"] / plan["batch_size"]) * plan["n_epochs"]
    if total_steps <= CALIBRATION_STEPS:  # the calibration run was the whole job
        return DurationEstimate(seconds=finished - began, basis="the whole job, run here as calibration")
    steps = clock.step_times()
    epoch_end = clock.last("Checkpoint saved")  # the checkpoint after the capped step
    per_step = (steps[-1] - started_at) / CALIBRATION_STEPS
    seconds = (started_at - began) + total_steps * per_step + plan["n_epochs"] * (epoch_end - steps[-1])
    return DurationEstimate(
        seconds=seconds,
        basis=f"a {CALIBRATION_STEPS}-step calibration run on this machine ({per_step * 1000:.0f} ms per step)",
    )
