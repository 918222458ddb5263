"""Training time from the server's own history: the last succeeded jobs on the same model and method.

A job's training time runs from its first "started" event to ``finished_at``; its throughput is trained
tokens per second of that. The prediction divides the new job's tokens by the median throughput of up to
``HISTORY_JOBS`` recent jobs, so it reflects the machine that will train (CPU or GPU backend) as it is.
Jobs that were paused or resumed are left out: their wall time includes the pause.
"""

from __future__ import annotations

import statistics
from itertools import islice
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from client import MKA1Client
    from client.models import FineTuningJob

HISTORY_JOBS = 3
# Jobs looked at (newest first) before giving up: bounded, so a long job list costs a few pages at most.
SCAN_LIMIT = 200
_START_MESSAGES = ("Fine-tuning job started", "Training started")
_INTERRUPTED = ("paused", "resum", "re-queued")


class DurationEstimate(BaseModel):
    """Predicted training seconds (None when there is no basis) and what the prediction rests on."""

    seconds: float | None = None
    tokens_per_second: float | None = None
    basis: str = Field(description="Which jobs the throughput came from, or why there is none")
    jobs: list[str] = Field(default_factory=list)


def job_training_seconds(client: MKA1Client, job: FineTuningJob) -> float | None:
    """Seconds from the job's first start event to ``finished_at``; None when unknown or interrupted."""
    if job.finished_at is None:
        return None
    events = client.jobs.new_events(job.id, None)  # oldest first
    if any(word in e.message.lower() for e in events for word in _INTERRUPTED):
        return None
    started = next((e.created_at for e in events if e.message.startswith(_START_MESSAGES)), None)
    if started is None:
        started = job.created_at
    if started is None or job.finished_at <= started:
        return None
    return float(job.finished_at - started)


def measured_training_seconds(client: MKA1Client, job: FineTuningJob) -> float | None:
    """``job_training_seconds`` for a record: an API error leaves the time unknown instead of failing."""
    from client.errors import APIError

    try:
        return job_training_seconds(client, job)
    except APIError:
        return None


def _method_of(job: FineTuningJob) -> str:
    return job.method.type if job.method is not None else "supervised"


def from_history(client: MKA1Client, model: str, method: str, tokens: int) -> DurationEstimate:
    """Predict the training time of ``tokens`` trained tokens from recent jobs on ``model``."""
    rates: list[float] = []
    used: list[str] = []
    for job in islice(client.jobs.list(limit=100), SCAN_LIMIT):
        if len(rates) >= HISTORY_JOBS:
            break
        if job.status != "succeeded" or job.model != model or _method_of(job) != method:
            continue
        if not job.trained_tokens:
            continue
        seconds = job_training_seconds(client, job)
        if seconds is None:
            continue
        rates.append(job.trained_tokens / seconds)
        used.append(job.id)
    if not rates:
        return DurationEstimate(basis=f"no finished {method} job on {model} yet to measure throughput from")
    rate = statistics.median(rates)
    return DurationEstimate(
        seconds=tokens / rate,
        tokens_per_second=rate,
        basis=f"median throughput of the last {len(rates)} {method} job(s) on {model}",
        jobs=used,
    )
