"""Price lookup from a fake pricing endpoint (httpx.MockTransport), the settings table, and the budget line."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from client import ClientSettings, MKA1Client
from estimate.budget import Budget
from estimate.core import JobEstimate, budget_problem, totals
from estimate.duration import DurationEstimate
from estimate.pricing import Price, PriceTable, find_price
from estimate.tokens import TokenCount

BASE = "https://api.test/api/v1/llm"
MODEL = "meetkai:functionary-medium"


def _client(routes: dict[str, Any], seen: list[httpx.Request]) -> MKA1Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        key = request.url.path.removeprefix("/api/v1/llm/")
        if request.url.params.get("model"):
            key += "?model=" + request.url.params["model"]
        if key not in routes:
            return httpx.Response(404, json={"error": {"message": "no route", "type": "not_found"}})
        return httpx.Response(200, content=json.dumps(routes[key]).encode())

    return MKA1Client(
        ClientSettings(base_url=BASE, api_key="sk-test"), transport=httpx.MockTransport(handler)
    )


def _effective(rows: list[dict[str, Any]], currency: str | None = "EUR") -> dict[str, Any]:
    return {"object": "list", "currency": currency, "data": rows}


def test_effective_price_of_the_model_with_its_currency_and_source() -> None:
    seen: list[httpx.Request] = []
    rows = [
        {"model": "other", "rates": {"training_tokens": 99.0}, "source": "cluster_default"},
        {"model": MODEL, "rates": {"input_tokens": 0.5, "training_tokens": 8.0}, "source": "org_override"},
    ]
    with _client({"models/pricing/effective": _effective(rows)}, seen) as client:
        found = find_price(client, MODEL, PriceTable())
    assert found.price == Price(per_million_tokens=8.0, currency="EUR", source="API org_override")
    assert found.price.cost(2_500_000) == pytest.approx(20.0)
    assert [r.url.path for r in seen] == ["/api/v1/llm/models/pricing/effective"]
    assert seen[0].headers["authorization"] == "Bearer sk-test"


def test_model_missing_from_effective_is_looked_up_by_name() -> None:
    seen: list[httpx.Request] = []
    listed = {
        "object": "list",
        "data": [
            {
                "model": "local:/models/x",
                "org_id": None,
                "rates": {"training_tokens": 1.5},
                "effective_from": "2026-12-01T00:00:00Z",
                "effective_to": None,
                "set_by": None,
            }
        ],
    }
    routes = {
        "models/pricing/effective": _effective([], currency=None),
        "models/pricing?model=local:/models/x": listed,
        "models/pricing/currency": {"currency": "USD"},
    }
    with _client(routes, seen) as client:
        found = find_price(client, "local:/models/x", PriceTable())
    assert found.price == Price(per_million_tokens=1.5, currency="USD", source="API cluster price")


def test_inference_only_rates_are_not_a_training_price_and_the_table_fills_in() -> None:
    """MKA1's rows carry inference rates; using input_tokens as a training price would be made up."""
    seen: list[httpx.Request] = []
    routes = {
        "models/pricing/effective": _effective(
            [
                {
                    "model": MODEL,
                    "rates": {"input_tokens": 0.5, "output_tokens": 1.5},
                    "source": "cluster_default",
                }
            ]
        ),
        f"models/pricing?model={MODEL}": {"object": "list", "data": []},
    }
    with _client(routes, seen) as client:
        missing = find_price(client, MODEL, PriceTable())
        assert missing.price is None
        assert missing.note is not None and "lists no training price" in missing.note
        assert "FTPIPE_TRAINING_PRICES" in missing.note
        calls = len(seen)
        table = PriceTable(prices={MODEL: 3.0}, price_currency="GBP")
        found = find_price(client, MODEL, table)
    assert found.price == Price(
        per_million_tokens=3.0, currency="GBP", source="settings FTPIPE_TRAINING_PRICES"
    )
    assert len(seen) == calls  # the table overrides: no API call


def test_an_api_without_pricing_is_a_note_not_a_crash() -> None:
    with _client({}, []) as client:
        found = find_price(client, MODEL, PriceTable())
    assert found.price is None and found.note is not None and "no pricing endpoint (HTTP 404)" in found.note


def test_price_table_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTPIPE_TRAINING_PRICES", json.dumps({MODEL: 2.25}))
    monkeypatch.setenv("FTPIPE_TRAINING_PRICE_CURRENCY", "CHF")
    found = find_price(None, MODEL)
    assert found.price == Price(
        per_million_tokens=2.25, currency="CHF", source="settings FTPIPE_TRAINING_PRICES"
    )


def _estimate(tokens_per_epoch: int, epochs: int, price: float | None, currency: str = "USD") -> JobEstimate:
    return JobEstimate(
        model=MODEL,
        method="supervised",
        training_file="train.jsonl",
        tokens=TokenCount(
            tokens=tokens_per_epoch * epochs,
            tokens_per_epoch=tokens_per_epoch,
            n_epochs=epochs,
            examples=10,
            exact=True,
            counter="test",
        ),
        price=None if price is None else Price(per_million_tokens=price, currency=currency, source="test"),
        duration=DurationEstimate(basis="test"),
    )


def test_budget_lines_say_estimate_budget_and_what_to_change() -> None:
    est = _estimate(40_000, 3, price=10.0)  # 120k tokens, 1.20 USD
    assert budget_problem([est], Budget()) is None
    assert budget_problem([est], Budget(max_tokens=120_000, max_cost=1.2)) is None
    line = budget_problem([est], Budget(max_tokens=100_000))
    assert line == (
        "over budget: estimate 120,000 trained tokens > max_tokens 100,000; "
        "use --epochs 2 (40,000 tokens per epoch), or raise --max-tokens"
    )
    line = budget_problem([est], Budget(max_tokens=1_000))
    assert line is not None and "one epoch is already 40,000 tokens" in line
    line = budget_problem([est], Budget(max_cost=0.5))
    assert line is not None
    assert line.startswith(
        "over budget: estimate 1.20 USD (120,000 trained tokens at 10.00 USD per 1M, test)"
    )
    assert "> max_cost 0.50 USD; use --epochs 1" in line
    unpriced = _estimate(40_000, 3, price=None)
    line = budget_problem([unpriced], Budget(max_cost=5))
    assert line is not None and line.startswith("cannot check max_cost 5.00: no training price")


def test_sweep_total_adds_every_config() -> None:
    configs = [_estimate(40_000, 3, 10.0), _estimate(40_000, 1, 10.0), _estimate(10_000, 2, 10.0)]
    total = totals(configs)
    assert (total.tokens, total.cost, total.currency, total.jobs) == (180_000, pytest.approx(1.8), "USD", 3)
    # Each config alone fits 150k tokens; the sweep as a whole does not.
    assert all(budget_problem([c], Budget(max_tokens=150_000)) is None for c in configs)
    line = budget_problem(configs, Budget(max_tokens=150_000))
    assert line is not None and "180,000 trained tokens over 3 jobs > max_tokens 150,000" in line
    mixed = [*configs, _estimate(1, 1, 1.0, currency="EUR")]
    assert totals(mixed).cost is None


def test_async_client_reads_the_same_pricing_shapes() -> None:
    import asyncio

    from client import AsyncMKA1Client

    rows = [{"model": MODEL, "rates": {"training_tokens": 8.0}, "source": "cluster_default"}]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/llm/models/pricing/effective"
        return httpx.Response(200, json=_effective(rows))

    async def read() -> float | None:
        settings = ClientSettings(base_url=BASE, api_key="sk-test")
        async with AsyncMKA1Client(settings, transport=httpx.MockTransport(handler)) as client:
            effective = await client.pricing.effective()
        rates = effective.data[0].rates
        return rates.training_tokens if rates else None

    assert asyncio.run(read()) == 8.0
