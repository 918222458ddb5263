"""The training price of a base model: a local price table wins, else the API's pricing endpoints.

Prices are per 1M trained tokens. The table (``FTPIPE_TRAINING_PRICES``, a JSON object such as
``{"meetkai:functionary-medium": 8.0}``, in ``FTPIPE_TRAINING_PRICE_CURRENCY``) overrides the API or fills in
where it has no training rate: MKA1's published rates cover inference only, so a remote model is usually
priced from the table. With neither, the price is unknown and a cost budget cannot be checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from client.errors import APIStatusError, NotFoundError

if TYPE_CHECKING:
    from client import MKA1Client
    from client.pricing import PriceRates

PER = 1_000_000


class PriceTable(BaseSettings):
    """Local training prices (env prefix ``FTPIPE_TRAINING_``): ``PRICES`` as JSON, ``PRICE_CURRENCY``."""

    model_config = SettingsConfigDict(env_prefix="FTPIPE_TRAINING_", extra="ignore")

    prices: dict[str, float] = Field(default_factory=dict, description="model -> price per 1M trained tokens")
    price_currency: str = Field(default="USD", pattern="^[A-Z]{3}$")


class Price(BaseModel):
    """A training price and where it came from."""

    per_million_tokens: float = Field(ge=0)
    currency: str
    source: str = Field(description="'settings FTPIPE_TRAINING_PRICES' or 'API <source>'")

    def cost(self, tokens: int) -> float:
        """What ``tokens`` trained tokens cost at this price."""
        return tokens * self.per_million_tokens / PER


class PriceLookup(BaseModel):
    """The price found (or None) and, when none, why."""

    price: Price | None = None
    note: str | None = None


def _training_rate(rates: PriceRates | None) -> float | None:
    return None if rates is None else rates.training_tokens


def api_price(client: MKA1Client, model: str) -> PriceLookup:
    """The caller's effective training price for ``model`` from the API, else that model's listed price."""
    try:
        effective = client.pricing.effective()
    except APIStatusError as exc:
        if exc.status_code not in (404, 405, 501):
            raise
        return PriceLookup(note=f"the API has no pricing endpoint (HTTP {exc.status_code})")
    currency = effective.currency
    for row in effective.data:
        if row.model == model and (rate := _training_rate(row.rates)) is not None:
            return PriceLookup(
                price=Price(per_million_tokens=rate, currency=currency or "?", source=f"API {row.source}")
            )
    # Models that are not "active" (e.g. a local:/dir model of the embedded backend) are priced on request.
    try:
        listed_rows = client.pricing.list(model=model).data
    except NotFoundError:  # an API may answer 404 for a model it does not price
        listed_rows = []
    for listed in listed_rows:
        if listed.effective_to is None and (rate := _training_rate(listed.rates)) is not None:
            if currency is None:
                currency = client.pricing.currency().currency
            return PriceLookup(
                price=Price(per_million_tokens=rate, currency=currency or "?", source="API cluster price")
            )
    return PriceLookup(note=f"the API lists no training price for {model}")


def find_price(client: MKA1Client | None, model: str, table: PriceTable | None = None) -> PriceLookup:
    """The price table's entry for ``model``, else the API's (when a client is given), else a reason."""
    table = table if table is not None else PriceTable()
    if model in table.prices:
        return PriceLookup(
            price=Price(
                per_million_tokens=table.prices[model],
                currency=table.price_currency,
                source="settings FTPIPE_TRAINING_PRICES",
            )
        )
    if client is None:
        return PriceLookup(note=f"no price for {model} in FTPIPE_TRAINING_PRICES")
    found = api_price(client, model)
    if found.price is None:
        found.note = f"{found.note}; set FTPIPE_TRAINING_PRICES='{{\"{model}\": <price per 1M tokens>}}'"
    return found
