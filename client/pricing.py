"""Model pricing: ``GET /models/pricing``, ``/models/pricing/effective`` and ``/models/pricing/currency``.

Shapes follow MKA1's official SDK (``meetkai_mka1.models``: ModelPriceRow, EffectivePriceRow,
ClusterCurrencyResponse): rates are per 1M tokens in the cluster currency. MKA1's rates name inference
metrics only; ``training_tokens`` (per 1M trained tokens, what a fine-tuning job is billed on) is the one
rate ftpipe adds. The SDK ignores unknown rate keys, so the extended rows still parse there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from client import _responses as parse
from client._requests import RequestSpec, _query
from client.models import _Model

if TYPE_CHECKING:
    from client.async_client import AsyncMKA1Client
    from client.sync_client import MKA1Client


class PriceRates(_Model):
    """Per-1M-token rates; any may be missing (unknown keys are kept)."""

    training_tokens: float | None = Field(default=None, description="Per 1M trained tokens (ftpipe)")
    input_tokens: float | None = None
    output_tokens: float | None = None
    cached_tokens: float | None = None


class ModelPriceRow(_Model):
    """One dated price of a model (``GET /models/pricing``)."""

    model: str
    org_id: str | None = None
    rates: PriceRates
    effective_from: str | None = None
    effective_to: str | None = None
    set_by: str | None = None


class ModelPriceList(_Model):
    """``{object: "list", data: [ModelPriceRow]}``."""

    object: str = "list"
    data: list[ModelPriceRow] = Field(default_factory=list)


class EffectivePriceRow(_Model):
    """The price the caller pays for a model, and where it comes from (org_override, cluster_default, ...)."""

    model: str
    rates: PriceRates | None = None
    source: str
    resolves_to: list[str] | None = None


class EffectivePriceList(_Model):
    """``{object: "list", currency, data: [EffectivePriceRow]}``."""

    object: str = "list"
    currency: str | None = None
    data: list[EffectivePriceRow] = Field(default_factory=list)


class Currency(_Model):
    """``{currency}``: the cluster-wide ISO-4217 code, or null when unset."""

    currency: str | None = None


def pricing_list(model: str | None = None) -> RequestSpec[ModelPriceList]:
    """``GET /models/pricing`` (every model's current price, or one model's dated history)."""
    return RequestSpec("GET", "models/pricing", parse.model(ModelPriceList), params=_query(model=model))


def pricing_effective() -> RequestSpec[EffectivePriceList]:
    """``GET /models/pricing/effective``."""
    return RequestSpec("GET", "models/pricing/effective", parse.model(EffectivePriceList))


def pricing_currency() -> RequestSpec[Currency]:
    """``GET /models/pricing/currency``."""
    return RequestSpec("GET", "models/pricing/currency", parse.model(Currency))


class Pricing:
    """``/models/pricing`` endpoints of the blocking client."""

    def __init__(self, client: MKA1Client) -> None:
        self._c = client

    def list(self, model: str | None = None) -> ModelPriceList:
        """Cluster-default prices (with ``model``: that model's dated history)."""
        return self._c.send(pricing_list(model))

    def effective(self) -> EffectivePriceList:
        """The caller's effective price for every active model, with the currency."""
        return self._c.send(pricing_effective())

    def currency(self) -> Currency:
        """The cluster currency."""
        return self._c.send(pricing_currency())


class AsyncPricing:
    """``/models/pricing`` endpoints of the async client."""

    def __init__(self, client: AsyncMKA1Client) -> None:
        self._c = client

    async def list(self, model: str | None = None) -> ModelPriceList:
        """Cluster-default prices (with ``model``: that model's dated history)."""
        return await self._c.send(pricing_list(model))

    async def effective(self) -> EffectivePriceList:
        """The caller's effective price for every active model, with the currency."""
        return await self._c.send(pricing_effective())

    async def currency(self) -> Currency:
        """The cluster currency."""
        return await self._c.send(pricing_currency())
