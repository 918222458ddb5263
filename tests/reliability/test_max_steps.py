"""FTPIPE_BACKEND_MAX_STEPS_PER_JOB: a capped job still trains for real and ends with a full checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from backend.launcher import start_backend
from backend.settings import BackendSettings
from client.models import JobCreateRequest, Method
from tests.reliability.reliability_kit import client_for, small_dataset

pytestmark = pytest.mark.integration
METRICS = (
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)


def test_capped_job_succeeds_with_checkpoint_at_cap(tmp_path: Path) -> None:
    data = small_dataset(tmp_path / "ds")  # 24 examples, batch 4, 5 epochs: 30 steps uncapped
    settings = BackendSettings(data_dir=tmp_path / "b", max_steps_per_job=3)
    with start_backend(settings, port=0) as rb, client_for(rb, None) as c:
        f = c.files.upload(data / "train.jsonl")
        method = Method.model_validate(
            {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 5, "batch_size": 4}}}
        )
        job = c.jobs.create(
            JobCreateRequest(
                model="local:micro-chat", training_file=f.id, method=method, hyperparameters=None
            )
        )
        for _ in range(1200):
            if (job := c.jobs.retrieve(job.id)).is_terminal:
                break
            time.sleep(0.2)
        assert job.status == "succeeded" and job.fine_tuned_model, job
        (ckpt,) = list(c.jobs.list_checkpoints(job.id))
        messages = [e.message for e in c.jobs.list_events(job.id, limit=1000).data]
    assert ckpt.step_number == 3
    metrics = ckpt.metrics.model_dump()
    assert all(isinstance(metrics[m], float) for m in METRICS), metrics
    assert "Stopped at the 3-step cap" in messages
    assert any(m.startswith("Training completed: 3 steps") for m in messages), messages
