"""Cancel the remote job when the flow run is cancelled or interrupted.

Three paths reach here: the flow's own ``except`` around the wait (Ctrl-C, asyncio cancellation, Prefect's
TerminationSignal), its outer ``except`` for a Ctrl-C elsewhere after the job was created, and Prefect's
``on_cancellation`` hook (cancel from the UI/CLI via a runner). The last two find the job through
``jobs.json`` in the state dir (recorded as soon as the job exists), as the hook only sees the flow run.
After Ctrl-C the flow ends in Prefect's Cancelled state (not Crashed) with `interrupted_message` as its
message; calling the flow then raises Prefect's ``CancelledRun`` with that message.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from client import MKA1Client
from client.errors import APIError, ConflictError, NotFoundError
from contract.wire import TERMINAL_STATUSES
from flows.backend_runtime import open_connection
from flows.params import FineTuneParams
from tasks.state import default_state_dir, jobs_index

_log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while a job ran: the flow asked the server to cancel it; ``status`` is what it answered (None:
    not cancelled, e.g. it had already finished or the request failed)."""

    def __init__(self, job_id: str, status: str | None) -> None:
        super().__init__(job_id, status)
        self.job_id = job_id
        self.status = status


def interrupted_message(exc: KeyboardInterrupt, job_id: str | None) -> str:
    """The one line an interrupted run ends with (its Cancelled state's message, which the CLI prints).

    ``job_id``: the run's job, if it got one; only an interrupt during the wait finds it still running.
    """
    if isinstance(exc, Interrupted):
        if exc.status == "cancelled":
            return f"interrupted: cancelled job {exc.job_id}"
        if exc.status is not None:
            return f"interrupted: asked job {exc.job_id} to cancel (now {exc.status})"
        return (
            f"interrupted: job {exc.job_id} was not cancelled (it had finished, or the server did not answer)"
        )
    if job_id is None:
        return "interrupted before a fine-tuning job was created"
    return f"interrupted after job {job_id} had finished"


def cancel_job(client: MKA1Client, job_id: str, log: Any = _log) -> str | None:
    """Ask the server to cancel ``job_id``; returns the status it reports (None if that failed)."""
    try:
        job = client.jobs.cancel(job_id)
    except (ConflictError, NotFoundError) as exc:
        # Already finished (409) or gone (404): nothing left to stop.
        log.info("job %s not cancelled: %s", job_id, exc)
        return None
    except APIError as exc:
        log.error("could not cancel job %s: %s", job_id, exc)
        return None
    log.warning("cancelled remote job %s (now %s)", job_id, job.status)
    return str(job.status)


def jobs_of_flow_run(state_dir: Path, flow_run_id: str) -> list[str]:
    """Job ids recorded for ``flow_run_id`` whose last known status was not terminal."""
    return [
        entry["job_id"]
        for entry in jobs_index(state_dir).read().values()
        if isinstance(entry, dict)
        and entry.get("flow_run_id") == flow_run_id
        and entry.get("status") not in TERMINAL_STATUSES
    ]


def cancel_jobs_of_flow_run(
    params: FineTuneParams, flow_run_id: str, log: Any = _log
) -> list[tuple[str, str | None]]:
    """Cancel the unfinished jobs ``jobs.json`` records for ``flow_run_id``; each job id with the status the
    server answered (None: not cancelled). Their entries get that status, so nothing cancels them twice."""
    state_dir = params.state_dir or default_state_dir()
    job_ids = jobs_of_flow_run(state_dir, flow_run_id)
    if not job_ids:
        return []
    with (
        open_connection(params.base_url, params.on_behalf_of) as conn,
        MKA1Client(conn.settings, transport=conn.transport) as client,
    ):
        answered = {job_id: cancel_job(client, job_id, log) for job_id in job_ids}

    def mark(entries: dict[str, Any]) -> None:
        for entry in entries.values():
            if isinstance(entry, dict) and answered.get(entry.get("job_id", "")) is not None:
                entry["status"] = answered[entry["job_id"]]

    jobs_index(state_dir).update(mark)
    return list(answered.items())


def interrupted_outside_the_wait(
    params: FineTuneParams, flow_run_id: str | None, exc: KeyboardInterrupt
) -> KeyboardInterrupt:
    """Ctrl-C anywhere but the wait (which cancels its own job), e.g. just after the job was created: the job
    this run recorded is cancelled here, and the interrupt names it (`Interrupted`)."""
    if isinstance(exc, Interrupted) or flow_run_id is None:
        return exc
    try:
        cancelled = cancel_jobs_of_flow_run(params, flow_run_id)
    except Exception:
        _log.exception("could not cancel the jobs of flow run %s", flow_run_id)
        return exc
    if not cancelled:
        return exc
    job_id, status = cancelled[0]
    return Interrupted(job_id, status)


def on_cancellation_hook(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect ``on_cancellation`` hook: cancel the jobs this flow run started or attached to."""
    try:
        params = FineTuneParams.model_validate(flow_run.parameters or {})
    except Exception:
        _log.exception("cancellation hook: unreadable flow parameters; cannot find the job")
        return
    cancel_jobs_of_flow_run(params, str(flow_run.id))
