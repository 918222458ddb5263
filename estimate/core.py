"""The pre-flight estimate of one job (tokens, cost, duration) and the budget it is checked against."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from client.errors import APIError
from estimate.budget import Budget
from estimate.duration import DurationEstimate, from_history
from estimate.pricing import Price, PriceLookup, PriceTable, find_price
from estimate.tokens import Epochs, Method, TokenCount, count_tokens, is_embedded_model

if TYPE_CHECKING:
    from client import MKA1Client


class JobInputs(BaseModel):
    """What an estimate needs to know about one job (one run, or one config of a sweep)."""

    name: str | None = None
    train_path: Path
    validation_path: Path | None = None
    model: str
    method: Method = "supervised"
    n_epochs: Epochs = "auto"
    batch_size: int | str = "auto"


class JobEstimate(BaseModel):
    """What one job will train on, cost and take, with where each number came from."""

    model: str
    method: str
    training_file: str
    tokens: TokenCount
    price: Price | None = None
    price_note: str | None = Field(default=None, description="Why there is no price, or a remark on it")
    duration: DurationEstimate

    @property
    def cost(self) -> float | None:
        """Estimated cost in ``price.currency``; None when the price is unknown."""
        return None if self.price is None else self.price.cost(self.tokens.tokens)


def estimate_job(
    client: MKA1Client | None,
    train_path: Path,
    *,
    validation_path: Path | None = None,
    model: str,
    method: Method = "supervised",
    n_epochs: Epochs = "auto",
    batch_size: int | str = "auto",
    embedded: bool = False,
    table: PriceTable | None = None,
    calibrate: bool = True,
) -> JobEstimate:
    """Count tokens, look the price up and predict the duration (price and duration need ``client``).

    ``embedded``: ``client`` talks to the embedded backend on this machine, so with no job history to go
    by, a short calibration run of the trainer here times the job instead (unless ``calibrate`` is False).
    """
    tokens = count_tokens(train_path, model, method, n_epochs)
    # Price and history are extras: an API that fails to answer leaves them unknown, never fails the run.
    try:
        lookup = find_price(client, model, table)
    except APIError as exc:
        lookup = PriceLookup(note=f"the pricing lookup failed: {exc}")
    note = lookup.note
    if lookup.price is not None and embedded and lookup.price.per_million_tokens == 0:
        note = "local training is free (FTPIPE_BACKEND_TRAINING_PRICE_PER_MILLION=0)"
    if client is None:
        duration = DurationEstimate(basis="no API connection to read job history from")
    else:
        try:
            duration = from_history(client, model, method, tokens.tokens)
        except APIError as exc:
            duration = DurationEstimate(basis=f"reading the job history failed: {exc}")
    if calibrate and duration.seconds is None and embedded and is_embedded_model(model):
        from estimate.calibrate import calibrate as calibration_run

        duration = calibration_run(train_path, model, method, n_epochs, batch_size, validation_path)
    return JobEstimate(
        model=model,
        method=method,
        training_file=str(train_path),
        tokens=tokens,
        price=lookup.price,
        price_note=note,
        duration=duration,
    )


class EstimateVsActual(BaseModel):
    """The estimate next to what the job reported (result.json, the run record)."""

    model: str
    counter: str
    exact: bool
    n_epochs: int
    estimated_tokens: int
    actual_tokens: int | None = None
    token_error: float | None = Field(default=None, description="(estimated - actual) / actual")
    currency: str | None = None
    price_per_million_tokens: float | None = None
    price_source: str | None = None
    estimated_cost: float | None = None
    actual_cost: float | None = Field(default=None, description="actual tokens at the same price")
    estimated_duration_s: float | None = None
    actual_duration_s: float | None = None
    duration_error: float | None = None


def _relative(estimated: float | None, actual: float | None) -> float | None:
    if estimated is None or not actual:
        return None
    return (estimated - actual) / actual


def compare(est: JobEstimate, actual_tokens: int | None, actual_seconds: float | None) -> EstimateVsActual:
    """Put the estimate beside the job's reported tokens and measured training time."""
    price = est.price
    return EstimateVsActual(
        model=est.model,
        counter=est.tokens.counter,
        exact=est.tokens.exact,
        n_epochs=est.tokens.n_epochs,
        estimated_tokens=est.tokens.tokens,
        actual_tokens=actual_tokens,
        token_error=_relative(est.tokens.tokens, actual_tokens),
        currency=price.currency if price else None,
        price_per_million_tokens=price.per_million_tokens if price else None,
        price_source=price.source if price else None,
        estimated_cost=est.cost,
        actual_cost=price.cost(actual_tokens) if price and actual_tokens is not None else None,
        estimated_duration_s=est.duration.seconds,
        actual_duration_s=actual_seconds,
        duration_error=_relative(est.duration.seconds, actual_seconds),
    )


class Totals(BaseModel):
    """The sum over several jobs (a sweep): cost is None when any job's price is unknown."""

    tokens: int
    cost: float | None
    currency: str | None
    jobs: int


def totals(estimates: list[JobEstimate]) -> Totals:
    """Add up tokens and cost; mixed currencies or any unknown price leave the cost unknown."""
    currencies = {e.price.currency for e in estimates if e.price is not None}
    costs = [e.cost for e in estimates]
    known = all(c is not None for c in costs) and len(currencies) <= 1
    return Totals(
        tokens=sum(e.tokens.tokens for e in estimates),
        cost=sum(c for c in costs if c is not None) if known else None,
        currency=next(iter(currencies)) if len(currencies) == 1 else None,
        jobs=len(estimates),
    )


def _money(amount: float, currency: str | None) -> str:
    return f"{amount:,.2f} {currency or ''}".rstrip()


def budget_problem(estimates: list[JobEstimate], budget: Budget) -> str | None:
    """One line (estimate, budget, what to change) when the jobs do not fit ``budget``; None when they do."""
    if not budget.is_set or not estimates:
        return None
    total = totals(estimates)
    single = estimates[0].tokens if len(estimates) == 1 else None
    scope = "" if single is not None else f" over {total.jobs} jobs"
    if budget.max_tokens is not None and total.tokens > budget.max_tokens:
        max_tokens = budget.max_tokens
        return (
            f"over budget: estimate {total.tokens:,} trained tokens{scope} > max_tokens {max_tokens:,}; "
            + _advice(single, lambda tokens: tokens <= max_tokens, "--max-tokens")
        )
    if budget.max_cost is None:
        return None
    if total.cost is None:
        unknown = next((e for e in estimates if e.price is None), estimates[0])
        return (
            f"cannot check max_cost {budget.max_cost:,.2f}: no training price for {unknown.model}"
            f" ({unknown.price_note or 'the jobs are priced in different currencies'}), or drop --max-cost"
        )
    if total.cost > budget.max_cost:
        price = estimates[0].price
        assert price is not None  # total.cost is known, so every price is
        max_cost = budget.max_cost
        return (
            f"over budget: estimate {_money(total.cost, total.currency)} ({total.tokens:,} trained tokens{scope}"
            f" at {_money(price.per_million_tokens, price.currency)} per 1M, {price.source}) > max_cost "
            f"{_money(max_cost, total.currency)}; "
            + _advice(single, lambda tokens: price.cost(tokens) <= max_cost, "--max-cost")
        )
    return None


def _advice(tokens: TokenCount | None, fits: Callable[[int], bool], flag: str) -> str:
    """What to change: the most epochs that fit (one job), else fewer or shorter examples; or the budget."""
    if tokens is None:
        return f"drop configs or lower their epochs, or raise {flag}"
    fitting = max((k for k in range(1, tokens.n_epochs) if fits(k * tokens.tokens_per_epoch)), default=0)
    if fitting:
        return f"use --epochs {fitting} ({tokens.tokens_per_epoch:,} tokens per epoch), or raise {flag}"
    return (
        f"one epoch is already {tokens.tokens_per_epoch:,} tokens: train on fewer or shorter examples,"
        f" or raise {flag}"
    )
