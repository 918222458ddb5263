"""Responses: generate with a base, fine-tuned or checkpoint model owned by the caller."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from backend.context import RequestContext, require_auth
from backend.db import new_response_id, now
from backend.errors import BackendHTTPError
from backend.generation import GenerationRequest
from backend.model_refs import resolve_model
from backend.requests import ResponseCreate
from contract.wire import DEFAULT_MAX_OUTPUT_TOKENS

router = APIRouter()


def _conversation(ctx: RequestContext, body: ResponseCreate) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        row = ctx.db.one(
            "SELECT conversation FROM responses WHERE id = ? AND owner = ?",
            (body.previous_response_id, ctx.owner),
        )
        if row is None:
            raise BackendHTTPError(
                404,
                f"Previous response '{body.previous_response_id}' not found.",
                code="response_not_found",
                param="previous_response_id",
            )
        messages.extend(json.loads(row["conversation"]))
    if isinstance(body.input, str):
        messages.append({"role": "user", "content": body.input})
    else:
        # "developer" is the newer name for "system"; the chat template only knows the classic roles.
        messages.extend(
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.input
        )
    if not messages:
        raise BackendHTTPError(
            400, "input must contain at least one message.", code="invalid_request", param="input"
        )
    return messages


@router.post("/responses")
async def create_response(
    body: ResponseCreate, ctx: Annotated[RequestContext, Depends(require_auth)]
) -> dict[str, Any]:
    """Generate one assistant message; the model must be visible to this owner."""
    model = resolve_model(ctx.db, ctx.owner, body.model)
    messages = _conversation(ctx, body)
    max_tokens = body.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS
    # None is passed through: the generator decodes greedily unless sampling is asked for.
    temperature, top_p = body.temperature, body.top_p
    out = await ctx.state.generation.generate(
        GenerationRequest(
            model_ref=model.ref,
            messages=messages,
            instructions=body.instructions,
            max_output_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=body.seed,
        )
    )
    response_id = new_response_id()
    created = now()
    incomplete = out.output_tokens >= max_tokens
    obj: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "error": None,
        "model": body.model,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "metadata": body.metadata or {},
        "previous_response_id": body.previous_response_id,
        "store": body.store,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "output": [
            {
                "type": "message",
                "id": "msg_" + response_id.removeprefix("resp_"),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": out.text, "annotations": []}],
            }
        ],
        "output_text": out.text,
        "usage": {
            "input_tokens": out.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": out.input_tokens + out.output_tokens,
        },
    }
    if body.store:
        conversation = [*messages, {"role": "assistant", "content": out.text}]
        ctx.db.execute(
            "INSERT INTO responses (id, owner, created_at, model, conversation, body) VALUES (?,?,?,?,?,?)",
            (response_id, ctx.owner, created, body.model, json.dumps(conversation), json.dumps(obj)),
        )
    return obj
