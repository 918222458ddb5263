"""Responses: generate (whole or streamed) with a base, fine-tuned or checkpoint model owned by the caller;
retrieve, delete and list the input items of stored responses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from backend.context import RequestContext, require_auth
from backend.db import new_response_id, now
from backend.errors import BackendHTTPError, not_found
from backend.generation import GenerationOutput, GenerationRequest
from backend.idempotency import create_once
from backend.model_refs import ModelAccess, resolve_model
from backend.responses import (
    ResponseCreate,
    StreamEvents,
    chat_messages,
    input_items,
    new_item_id,
    output_message,
    response_object,
)
from backend.trainer.spec import ContextTooLong
from contract import wire

router = APIRouter()

MAX_INPUT_ITEMS_PAGE = 100
# Streamed generations run as tasks that outlive a client that stops reading; held here so they finish.
_RUNNING: set[asyncio.Task[dict[str, Any]]] = set()


@dataclass(frozen=True)
class _Prepared:
    """A validated request, ready to generate: ids, the model to load and the chat to continue."""

    body: ResponseCreate
    response_id: str
    item_id: str
    created_at: int
    request: GenerationRequest
    conversation: list[dict[str, Any]]
    items: list[dict[str, Any]]


def _prepare(ctx: RequestContext, body: ResponseCreate) -> _Prepared:
    model = resolve_model(ctx.db, ctx.owner, body.model, ModelAccess.of(ctx.state.settings))
    messages: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        row = ctx.db.one(
            "SELECT conversation FROM responses WHERE id = ? AND owner = ?",
            (body.previous_response_id, ctx.owner),
        )
        if row is None:
            raise not_found("response", body.previous_response_id, param="previous_response_id")
        messages.extend(json.loads(row["conversation"]))
    items = input_items(body)
    messages.extend(chat_messages(items))
    if not messages:
        raise BackendHTTPError(
            400, "input must contain at least one message.", code="invalid_request", param="input"
        )
    request = GenerationRequest(
        model_ref=model.ref,
        messages=messages,
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens or wire.DEFAULT_MAX_OUTPUT_TOKENS,
        # None is passed through: the generator decodes greedily unless sampling is asked for.
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        truncate=body.truncation != "disabled",
    )
    return _Prepared(body, new_response_id(), new_item_id(), now(), request, messages, items)


def _finish(ctx: RequestContext, prep: _Prepared, out: GenerationOutput) -> dict[str, Any]:
    """The final Response object, stored (with its conversation and input items) unless ``store: false``."""
    status: Literal["completed", "incomplete"] = (
        "incomplete" if out.output_tokens >= prep.request.max_output_tokens else "completed"
    )
    obj = response_object(
        prep.body,
        response_id=prep.response_id,
        created_at=prep.created_at,
        completed_at=now(),
        status=status,
        output=[output_message(prep.item_id, out.text, status)],
        usage=(out.input_tokens, out.output_tokens),
    )
    if prep.body.store is not False:
        conversation = [*prep.conversation, {"role": "assistant", "content": out.text}]
        ctx.db.execute(
            "INSERT INTO responses (id, owner, created_at, model, conversation, body, input_items)"
            " VALUES (?,?,?,?,?,?,?)",
            (
                prep.response_id,
                ctx.owner,
                prep.created_at,
                prep.body.model,
                json.dumps(conversation),
                json.dumps(obj),
                json.dumps(prep.items),
            ),
        )
    return obj


def _context_error(exc: Exception) -> BackendHTTPError:
    return BackendHTTPError(400, str(exc), code="context_length_exceeded", param="input")


@router.post("/responses", response_model=None)
async def create_response(
    body: ResponseCreate, request: Request, ctx: Annotated[RequestContext, Depends(require_auth)]
) -> dict[str, Any] | StreamingResponse:
    """Generate one assistant message; ``stream: true`` sends it as Server-Sent Events while it grows. A
    stored response's ``Idempotency-Key`` answers a repeat with the first answer (streams ignore it)."""
    ctx.state.generation.parsed()  # no longer arriving: its generation is asked at once
    prep = _prepare(ctx, body)
    if body.stream:
        return StreamingResponse(
            _stream(ctx, prep),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def create() -> dict[str, Any]:
        try:
            out = await ctx.state.generation.generate(prep.request)
        except ContextTooLong as exc:
            raise _context_error(exc) from exc
        return _finish(ctx, prep, out)

    if body.store is False:  # nothing is kept, so there is nothing to answer a repeat with
        return await create()
    return await create_once(
        ctx.db,
        ctx.owner,
        request,
        "responses",
        body.model_dump(mode="json"),
        table="responses",
        create=create,
        fetch=lambda response_id: _stored(ctx, response_id, "body"),
    )


async def _stream(ctx: RequestContext, prep: _Prepared) -> AsyncIterator[str]:
    """The Responses event protocol; a generation error ends the stream with ``response.failed``."""
    events = StreamEvents(prep.item_id)
    pieces: asyncio.Queue[str | None] = asyncio.Queue()

    async def complete() -> dict[str, Any]:
        return _finish(ctx, prep, await ctx.state.generation.generate(prep.request, pieces.put_nowait))

    task = asyncio.create_task(complete())
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    task.add_done_callback(lambda _: pieces.put_nowait(None))
    snapshot = response_object(
        prep.body, response_id=prep.response_id, created_at=prep.created_at, status="in_progress", output=[]
    )
    for event in events.opening(snapshot):
        yield event
    while (piece := await pieces.get()) is not None:
        yield events.delta(piece)
    try:
        final = task.result()
    except Exception as exc:
        code = "context_length_exceeded" if isinstance(exc, ContextTooLong) else "server_error"
        message = str(exc) if isinstance(exc, ContextTooLong) else "The model failed to generate a reply."
        failed = response_object(
            prep.body,
            response_id=prep.response_id,
            created_at=prep.created_at,
            status="failed",
            output=[],
            error={"code": code, "message": message},
        )
        yield events.failed(failed)
        return
    for event in events.closing(final):
        yield event


def _stored(ctx: RequestContext, response_id: str, column: str) -> Any:
    row = ctx.db.one(f"SELECT {column} FROM responses WHERE id = ? AND owner = ?", (response_id, ctx.owner))
    if row is None:
        raise not_found("response", response_id)
    return json.loads(row[column])


@router.get("/responses/{response_id}")
def retrieve_response(
    response_id: str, ctx: Annotated[RequestContext, Depends(require_auth)], stream: bool = False
) -> dict[str, Any]:
    """A stored response of this owner."""
    body: dict[str, Any] = _stored(ctx, response_id, "body")
    if stream:
        raise BackendHTTPError(
            400,
            "stream=true replays background responses; this backend finishes every response before answering.",
            code="invalid_request",
            param="stream",
        )
    return body


@router.delete("/responses/{response_id}")
def delete_response(
    response_id: str, ctx: Annotated[RequestContext, Depends(require_auth)]
) -> dict[str, Any]:
    """Delete a stored response (later ``previous_response_id`` references to it are 404)."""
    if not ctx.db.execute("DELETE FROM responses WHERE id = ? AND owner = ?", (response_id, ctx.owner)):
        raise not_found("response", response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.post("/responses/{response_id}/cancel")
def cancel_response(
    response_id: str, ctx: Annotated[RequestContext, Depends(require_auth)]
) -> dict[str, Any]:
    """Only background responses can be cancelled, and this backend runs none: always 409 (or 404)."""
    body: dict[str, Any] = _stored(ctx, response_id, "body")
    raise BackendHTTPError(
        409,
        f"Cannot cancel a response whose status is '{body['status']}': only background responses can be "
        "cancelled, and this backend finishes every response before answering.",
        code="invalid_state",
    )


@router.get("/responses/{response_id}/input_items")
def list_input_items(
    response_id: str,
    ctx: Annotated[RequestContext, Depends(require_auth)],
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_INPUT_ITEMS_PAGE)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    """The input items the response was created with, newest first by default; ``after=<item id>`` pages on."""
    items: list[dict[str, Any]] = _stored(ctx, response_id, "input_items")
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise BackendHTTPError(
                400,
                f"Invalid cursor: no input item with id '{after}' in this list.",
                code="invalid_cursor",
                param="after",
            )
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "has_more": len(items) > limit,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
