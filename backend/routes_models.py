"""Models: the built-in bases, their aliases, and the caller's fine-tuned and checkpoint models."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from backend.context import RequestContext, require_auth
from backend.model_refs import ModelAccess, describe_model, list_models
from backend.objects import ORGANIZATION_ID, model_object

router = APIRouter()


@router.get("/models")
def list_all(ctx: Annotated[RequestContext, Depends(require_auth)]) -> dict[str, Any]:
    """Every model this owner can name in a job or a response (not ``local:/abs/dir`` paths)."""
    infos = list_models(ctx.db, ctx.owner, ctx.state.settings.model_aliases, ORGANIZATION_ID)
    return {"object": "list", "data": [model_object(i) for i in infos]}


# :path so that local:/abs/dir ids (slashes included) reach the handler.
@router.get("/models/{model_id:path}")
def retrieve(model_id: str, ctx: Annotated[RequestContext, Depends(require_auth)]) -> dict[str, Any]:
    """One model, or 404 when this owner cannot use it."""
    return model_object(
        describe_model(ctx.db, ctx.owner, model_id, ModelAccess.of(ctx.state.settings), ORGANIZATION_ID)
    )
