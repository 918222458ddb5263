"""Stage 3: create the fine-tuning job, or attach to the one these exact inputs already produced.

The idempotency key hashes the job's inputs (never the flow run id), so any re-run of the same inputs
finds the same job: via the local jobs index, the server's metadata filter, or a client-side scan of
recent jobs for servers that ignore the filter.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task

from client import MKA1Client
from client.errors import APIError, NotFoundError
from client.models import FineTuningJob, JobCreateRequest, JobStatus, Method
from tasks import report, runtime
from tasks.progress import ProgressUpdate, publish
from tasks.retry_policy import api_task_options
from tasks.state import jobs_index, key_lock, scoped_key

IDEMPOTENCY_KEY = "ftpipe_idempotency_key"
FLOW_RUN_KEY = "ftpipe_flow_run_id"
# How many recent jobs to scan client-side when the server ignores the metadata filter.
RECENT_JOBS_SCAN = 200
FILTERED_JOBS_SCAN = 1000
_DEAD = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(frozen=True)
class JobSpec:
    """Everything that defines a job's outcome (and therefore its idempotency key)."""

    model: str
    training_file: str
    validation_file: str | None
    method: Method
    suffix: str | None
    seed: int | None
    # Where the server also reports the job (e.g. Weights & Biases); not part of the job's identity.
    integrations: list[dict[str, Any]] = field(default_factory=list)

    def idempotency_key(self) -> str:
        """sha256 over the canonical JSON of the inputs."""
        payload = {
            "model": self.model,
            "training_file": self.training_file,
            "validation_file": self.validation_file,
            "method": self.method.model_dump(mode="json", exclude_none=True),
            "suffix": self.suffix,
            "seed": self.seed,
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class JobHandle:
    """The job this run follows, and whether it was created or attached to."""

    job: FineTuningJob
    idempotency_key: str
    attached: bool
    how: str  # "created" | "index" | "metadata-filter" | "recent-scan"


def _matches(job: FineTuningJob, key: str) -> bool:
    return (job.metadata or {}).get(IDEMPOTENCY_KEY) == key


def _matching(jobs: Iterable[FineTuningJob], key: str, limit: int) -> list[FineTuningJob]:
    """The jobs tagged with ``key`` among the first ``limit`` of ``jobs``."""
    return [job for job in itertools.islice(jobs, limit) if _matches(job, key)]


def _pick(candidates: list[FineTuningJob], fresh_if_dead: bool) -> FineTuningJob | None:
    """Newest live job first; a dead one only when the caller accepts dead jobs."""
    ordered = sorted(candidates, key=lambda j: j.created_at or 0, reverse=True)
    for job in ordered:
        if job.status not in _DEAD:
            return job
    if not fresh_if_dead and ordered:
        return ordered[0]
    return None


def find_existing_job(
    client: MKA1Client, key: str, *, index_job_id: str | None, fresh_if_dead: bool
) -> tuple[FineTuningJob | None, str]:
    """Look for a job created from the same inputs; returns (job, where it was found)."""
    if index_job_id:
        try:
            job = client.jobs.retrieve(index_job_id)
        except NotFoundError:
            job = None
        if job is not None and _matches(job, key):
            picked = _pick([job], fresh_if_dead)
            if picked is not None:
                return picked, "index"
    # Filter client-side too (a server may ignore the filter), and bound the walk in case it does.
    picked = _pick(
        _matching(client.jobs.list(metadata={IDEMPOTENCY_KEY: key}), key, FILTERED_JOBS_SCAN), fresh_if_dead
    )
    if picked is not None:
        return picked, "metadata-filter"
    # A server that mis-parses the filter may return nothing: scan the most recent jobs ourselves.
    picked = _pick(_matching(client.jobs.list(), key, RECENT_JOBS_SCAN), fresh_if_dead)
    return (picked, "recent-scan") if picked is not None else (None, "created")


def record_job(
    state_dir: Path,
    server_id: str,
    on_behalf_of: str | None,
    key: str,
    job: FineTuningJob,
    flow_run_id: str | None,
) -> None:
    """Remember the job in ``jobs.json`` so a crashed run's job can be found (and cancelled) later."""
    jobs_index(state_dir).put(
        scoped_key(server_id, on_behalf_of, key),
        {"job_id": job.id, "flow_run_id": flow_run_id, "status": str(job.status), "server_id": server_id},
    )


def _request_key(client: MKA1Client, key: str, fresh_if_dead: bool) -> str:
    """The create call's Idempotency-Key. A fresh job after failed ones needs a new key (the server would
    answer the old one with the failed job): it counts the dead jobs it replaces, so identical fresh
    launches still agree on one key."""
    if not fresh_if_dead:
        return f"ftpipe-job-{key}"
    dead = _matching(client.jobs.list(metadata={IDEMPOTENCY_KEY: key}), key, FILTERED_JOBS_SCAN)
    return f"ftpipe-job-{key}-after-{len(dead)}"


def keep_oldest(client: MKA1Client, key: str, created: FineTuningJob, log: Any) -> FineTuningJob:
    """Against a server that ignores Idempotency-Key, identical launches on different machines can each
    create a job: list the live jobs with this key, keep the oldest and cancel the younger ones."""
    listed = _matching(client.jobs.list(metadata={IDEMPOTENCY_KEY: key}), key, FILTERED_JOBS_SCAN)
    live = [j for j in listed if j.status not in _DEAD]
    if not any(j.id == created.id for j in live):
        live.append(created)
    keep = min(live, key=lambda j: (j.created_at or 0, j.id))
    for dup in live:
        if dup.id != keep.id:
            log.warning(
                "cancelling duplicate job %s of %s (same inputs, created concurrently)", dup.id, keep.id
            )
            try:
                client.jobs.cancel(dup.id)
            except APIError as exc:  # it may have finished or been cancelled meanwhile
                log.warning("could not cancel duplicate job %s: %s", dup.id, exc)
    return keep


@task(name="create-job", **api_task_options())
def create_job_task(
    client: MKA1Client,
    spec: JobSpec,
    *,
    metadata: dict[str, str],
    state_dir: Path,
    server_id: str,
    flow_run_id: str | None,
    fresh_if_dead: bool = False,
) -> JobHandle:
    """Attach to the job these inputs already made, else create it (tagged with the idempotency key)."""
    log = runtime.run_logger()
    key = spec.idempotency_key()
    obo = client.settings.on_behalf_of
    publish(ProgressUpdate("create-job", "looking for an existing job"))
    # Identical runs on this machine take turns; the server-side Idempotency-Key covers the rest.
    with key_lock(state_dir, scoped_key(server_id, obo, key)):
        entry = jobs_index(state_dir).get(scoped_key(server_id, obo, key))
        index_job_id = entry.get("job_id") if isinstance(entry, dict) else None
        job, how = find_existing_job(client, key, index_job_id=index_job_id, fresh_if_dead=fresh_if_dead)
        attached = job is not None
        if job is None:
            tags: dict[str, Any] = {**metadata, IDEMPOTENCY_KEY: key}
            if flow_run_id:
                tags[FLOW_RUN_KEY] = flow_run_id
            created = client.jobs.create(
                JobCreateRequest(
                    model=spec.model,
                    training_file=spec.training_file,
                    validation_file=spec.validation_file,
                    suffix=spec.suffix,
                    seed=spec.seed,
                    method=spec.method,
                    hyperparameters=None,
                    metadata=tags,
                    integrations=spec.integrations or None,
                ),
                idempotency_key=_request_key(client, key, fresh_if_dead),
            )
            # Recorded at once: a Ctrl-C from here on finds (and cancels) it through jobs.json.
            record_job(state_dir, server_id, obo, key, created, flow_run_id)
            job = keep_oldest(client, key, created, log)
            how = "created" if job.id == created.id else "deduplicated"
        record_job(state_dir, server_id, obo, key, job, flow_run_id)
    log.info(
        "%s job %s (%s, model %s, key %s)",
        f"attached ({how}) to" if attached else "created",
        job.id,
        job.status,
        spec.model,
        key[:12],
    )
    publish(ProgressUpdate("create-job", f"job {job.id}", job_id=job.id, job_status=str(job.status)))
    runtime.link(
        report.job_url(client.settings.base_url, job.id),
        text=report.job_link_text(job.id),
        key=runtime.artifact_key("job-link"),
        description="API URL of the fine-tuning job",
    )
    runtime.markdown(
        report.job_markdown(job, spec, key, attached, how),
        key=runtime.artifact_key("job"),
        description="fine-tuning job",
    )
    return JobHandle(job=job, idempotency_key=key, attached=attached, how=how)
