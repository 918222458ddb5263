"""Fine-tuning jobs: create, list (metadata filter), retrieve, events, checkpoints, pause/resume/cancel."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from backend.context import RequestContext, require_auth
from backend.errors import BackendHTTPError
from backend.idempotency import create_once
from backend.objects import checkpoint_object, event_object, job_object, paginate
from backend.requests import JobCreate

router = APIRouter()

# pause answers once the worker has stopped at a step boundary, or after this long (still "running").
PAUSE_WAIT_S = 10.0


@router.post("/fine_tuning/jobs")
async def create_job(
    body: JobCreate, request: Request, ctx: Annotated[RequestContext, Depends(require_auth)]
) -> dict[str, Any]:
    """Create a job; it starts in ``validating_files`` and validation runs in the background. A repeated
    ``Idempotency-Key`` answers with the job the first request created."""
    jobs = ctx.state.jobs

    async def create() -> dict[str, Any]:
        return job_object(await asyncio.to_thread(jobs.create, ctx.owner, body))

    return await create_once(
        ctx.db,
        ctx.owner,
        request,
        "fine_tuning.jobs",
        body.model_dump(mode="json"),
        table="jobs",
        create=create,
        fetch=lambda job_id: job_object(jobs.get(ctx.owner, job_id)),
    )


@router.get("/fine_tuning/jobs")
def list_jobs(
    request: Request,
    ctx: Annotated[RequestContext, Depends(require_auth)],
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    """This owner's jobs, newest first; ``metadata[k]=v`` query parameters filter on metadata."""
    where, params = "owner = ?", [ctx.owner]
    for key, value in request.query_params.multi_items():
        if key.startswith("metadata[") and key.endswith("]"):
            name = key[len("metadata[") : -1]
            if not name:
                raise BackendHTTPError(
                    400, "Empty metadata key in filter.", code="invalid_request", param="metadata"
                )
            where += " AND json_extract(metadata, ?) = ?"
            params += ['$."' + name.replace("\\", "\\\\").replace('"', '\\"') + '"', value]
    return paginate(
        ctx.db, "jobs", where, params, after=after, limit=limit, order="desc", to_object=job_object
    )


@router.get("/fine_tuning/jobs/{job_id}")
def retrieve_job(job_id: str, ctx: Annotated[RequestContext, Depends(require_auth)]) -> dict[str, Any]:
    """One job."""
    return job_object(ctx.state.jobs.get(ctx.owner, job_id))


@router.get("/fine_tuning/jobs/{job_id}/events")
def list_events(
    job_id: str,
    ctx: Annotated[RequestContext, Depends(require_auth)],
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 20,
) -> dict[str, Any]:
    """Events newest first; ``after=<event id>`` returns the older ones."""
    return _job_children(ctx, job_id, "events", event_object, after=after, limit=limit)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def list_checkpoints(
    job_id: str,
    ctx: Annotated[RequestContext, Depends(require_auth)],
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> dict[str, Any]:
    """Checkpoints newest first; ``after=<checkpoint id>`` returns the older ones."""
    return _job_children(ctx, job_id, "checkpoints", checkpoint_object, after=after, limit=limit)


def _job_children(
    ctx: RequestContext,
    job_id: str,
    table: Literal["events", "checkpoints"],
    to_object: Callable[[sqlite3.Row], dict[str, Any]],
    *,
    after: str | None,
    limit: int,
) -> dict[str, Any]:
    """One page of a job's events or checkpoints, newest first (404 unless the job is this owner's)."""
    ctx.state.jobs.get(ctx.owner, job_id)
    return paginate(
        ctx.db,
        table,
        "owner = ? AND job_id = ?",
        [ctx.owner, job_id],
        after=after,
        limit=limit,
        order="desc",
        to_object=to_object,
    )


@router.post("/fine_tuning/jobs/{job_id}/pause")
async def pause_job(job_id: str, ctx: Annotated[RequestContext, Depends(require_auth)]) -> dict[str, Any]:
    """Pause a running job; answers once the worker saved a resumable checkpoint (status ``paused``)."""
    jobs = ctx.state.jobs
    await asyncio.to_thread(jobs.pause, ctx.owner, job_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PAUSE_WAIT_S
    while True:
        row = await asyncio.to_thread(jobs.get, ctx.owner, job_id)
        if row["status"] != "running" or loop.time() >= deadline:
            return job_object(row)
        await asyncio.sleep(0.1)


@router.post("/fine_tuning/jobs/{job_id}/resume")
def resume_job(job_id: str, ctx: Annotated[RequestContext, Depends(require_auth)]) -> dict[str, Any]:
    """Re-queue a paused job; it continues from its checkpoint."""
    ctx.state.jobs.resume(ctx.owner, job_id)
    return job_object(ctx.state.jobs.get(ctx.owner, job_id))


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(job_id: str, ctx: Annotated[RequestContext, Depends(require_auth)]) -> dict[str, Any]:
    """Cancel a job that has not finished."""
    ctx.state.jobs.cancel(ctx.owner, job_id)
    return job_object(ctx.state.jobs.get(ctx.owner, job_id))
