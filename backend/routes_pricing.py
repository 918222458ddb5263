"""Model pricing in MKA1's shapes: ``/models/pricing``, ``/models/pricing/effective``, ``/currency``.

Every model of this backend has the one configured training price (``training_price_per_million``, per 1M
trained tokens, in ``price_currency``; 0 by default: local training is free). Inference is free. Register
this router before any ``/models/{id}`` route, or ``pricing`` is taken for a model id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from backend.context import RequestContext, require_auth
from backend.settings import BackendSettings

router = APIRouter()

# The price is read from the settings at start-up, so it has been in effect since this process started.
_EFFECTIVE_FROM = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _builtin_models() -> tuple[str, ...]:
    from backend.trainer.base_models import BUILTIN_MODELS

    return tuple(BUILTIN_MODELS)


def _is_priced(model: str, settings: BackendSettings) -> bool:
    from backend.errors import BackendHTTPError
    from backend.model_refs import ModelAccess, is_known_base_model

    try:
        return is_known_base_model(model, ModelAccess.of(settings))
    except BackendHTTPError:  # a local:/dir outside the allowed roots: no price, as for any unknown model
        return False


def _rates(settings: BackendSettings) -> dict[str, float]:
    return {"training_tokens": settings.training_price_per_million, "input_tokens": 0.0, "output_tokens": 0.0}


@router.get("/models/pricing/currency")
def currency(ctx: Annotated[RequestContext, Depends(require_auth)]) -> dict[str, Any]:
    """The backend's currency (ISO-4217)."""
    return {"currency": ctx.state.settings.price_currency}


@router.get("/models/pricing/effective")
def effective_prices(ctx: Annotated[RequestContext, Depends(require_auth)]) -> dict[str, Any]:
    """The price of every built-in model (``local:/dir`` models cost the same; ask for one by name)."""
    settings = ctx.state.settings
    rows = [{"model": m, "rates": _rates(settings), "source": "cluster_default"} for m in _builtin_models()]
    return {"object": "list", "currency": settings.price_currency, "data": rows}


@router.get("/models/pricing")
def list_prices(
    ctx: Annotated[RequestContext, Depends(require_auth)], model: str | None = None
) -> dict[str, Any]:
    """Current price rows; with ``model``, that model's history (one row, or none for an unknown model)."""
    models = (
        _builtin_models() if model is None else ((model,) if _is_priced(model, ctx.state.settings) else ())
    )
    rates = _rates(ctx.state.settings)
    rows = [
        {
            "model": m,
            "org_id": None,
            "rates": rates,
            "effective_from": _EFFECTIVE_FROM,
            "effective_to": None,
            "set_by": None,
        }
        for m in models
    ]
    return {"object": "list", "data": rows}
