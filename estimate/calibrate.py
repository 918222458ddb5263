"""Training time of an embedded-model job with no history yet: a short calibration run of the real trainer.

The trainer runs ``CALIBRATION_STEPS`` steps of the job (same model, data, batch size, device and thread
count as a backend worker on this machine) into a temporary folder. Its events give three timings: the
start-up (loading the model, encoding the data; DPO's reference pass), the time per optimizer step, and
the end of an epoch (evaluation + checkpoint). The job's time is start-up + steps x step time + epochs x
epoch-end time. Imports torch; only ``ftpipe estimate`` and a first run on a model pay for it.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from estimate.duration import DurationEstimate
from estimate.tokens import Epochs, Method

CALIBRATION_STEPS = 8


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

    def step_times(self) -> list[float]:
        return [t for t, m, d in self.events if m.startswith("Step ")]


def calibrate(
    train_path: Path, model: str, method: Method, n_epochs: Epochs, batch_size: int | str = "auto"
) -> DurationEstimate:
    """Predict the job's training time from a few real steps on this machine."""
    from backend.trainer.spec import TrainingSpec
    from backend.trainer.train import train

    clock = _Clock()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ftpipe-calibration-") as tmp:
        spec = TrainingSpec(
            job_id="ftjob_calibration",
            base_model=model,
            training_file=train_path,
            validation_file=None,
            output_dir=Path(tmp),
            method=method,
            n_epochs=n_epochs,
            batch_size=batch_size,  # type: ignore[arg-type]
            metrics_every_n_steps=1,
            max_steps=CALIBRATION_STEPS,
        )
        train(spec, clock)  # type: ignore[arg-type]
    started_at, plan = clock.first("Training started")
    steps = clock.step_times()
    epoch_end, _ = clock.first("Checkpoint saved")
    if len(steps) < 2:
        return DurationEstimate(basis="the calibration run was too short to time a step")
    per_step = (steps[-1] - steps[0]) / (len(steps) - 1)  # the first step's warm-up left out
    total_steps = math.ceil(plan["n_examples"] / plan["batch_size"]) * plan["n_epochs"]
    seconds = (
        (started_at - began) + total_steps * per_step + plan["n_epochs"] * max(0.0, epoch_end - steps[-1])
    )
    return DurationEstimate(
        seconds=seconds,
        basis=f"a {len(steps)}-step calibration run on this machine ({per_step * 1000:.0f} ms per step)",
    )
