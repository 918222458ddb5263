"""How an estimate reads: terminal lines, a one-line log summary and the Markdown artifact."""

from __future__ import annotations

from estimate.budget import Budget
from estimate.core import EstimateVsActual, JobEstimate, Totals


def money(amount: float | None, currency: str | None) -> str:
    """``1.23 USD``, or ``unknown``."""
    return "unknown" if amount is None else f"{amount:,.2f} {currency or ''}".rstrip()


def duration(seconds: float | None) -> str:
    """``~41 s``, ``~3.5 min``, ``~1.2 h`` or ``unknown``."""
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"~{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"~{seconds / 60:.1f} min"
    return f"~{seconds / 3600:.1f} h"


def rows(est: JobEstimate) -> list[tuple[str, str]]:
    """(label, value) pairs shared by the terminal and the artifact."""
    t = est.tokens
    how = "exact" if t.exact else "approximate"
    token_detail = f"{t.examples:,} examples x {t.n_epochs} epochs; {how}, {t.counter}"
    if t.skipped:
        token_detail += f"; {t.skipped} example(s) without trainable tokens skipped"
    if t.at_limit:
        token_detail += f"; {t.at_limit} sequence(s) cut at the length limit"
    price = est.price
    price_value = (
        f"{money(price.per_million_tokens, price.currency)} per 1M trained tokens ({price.source})"
        if price
        else "unknown"
    )
    if est.price_note:
        price_value += f"; {est.price_note}"
    d = est.duration
    speed = f", {d.tokens_per_second:,.0f} tokens/s" if d.tokens_per_second else ""
    return [
        ("model", f"{est.model} ({est.method})"),
        ("trained tokens", f"{t.tokens:,} ({token_detail})"),
        ("price", price_value),
        ("cost", money(est.cost, price.currency if price else None)),
        ("duration", f"{duration(d.seconds)} ({d.basis}{speed})"),
    ]


def summary_line(est: JobEstimate) -> str:
    """One log line: tokens, cost and duration."""
    price = est.price
    return (
        f"estimate: {est.tokens.tokens:,} trained tokens ({est.tokens.n_epochs} epochs), "
        f"cost {money(est.cost, price.currency if price else None)}, duration {duration(est.duration.seconds)}"
    )


def budget_text(budget: Budget) -> str:
    """``max_tokens 1,000, max_cost 5.00`` or ``none``."""
    parts = []
    if budget.max_tokens is not None:
        parts.append(f"max_tokens {budget.max_tokens:,}")
    if budget.max_cost is not None:
        parts.append(f"max_cost {budget.max_cost:,.2f}")
    return ", ".join(parts) or "none"


def markdown(est: JobEstimate, budget: Budget, problem: str | None) -> str:
    """The pre-flight artifact: the estimate, the budget and the verdict."""
    verdict = (
        "no budget set" if not budget.is_set else (f"**stopped**: {problem}" if problem else "within budget")
    )
    table = "".join(f"| {k} | {v} |\n" for k, v in [*rows(est), ("budget", budget_text(budget))])
    return f"### Pre-flight estimate\n\n| | |\n|---|---|\n{table}\n{verdict}\n"


def totals_line(total: Totals) -> str:
    """A sweep's sum over its configs."""
    return (
        f"sweep estimate: {total.tokens:,} trained tokens over {total.jobs} jobs, "
        f"cost {money(total.cost, total.currency)}"
    )


def _error(value: float | None) -> str:
    return "" if value is None else f", {value:+.1%}"


def vs_actual_rows(e: EstimateVsActual) -> list[tuple[str, str]]:
    """The estimate beside what the job reported: tokens, cost and training time."""
    actual = "unknown" if e.actual_tokens is None else f"{e.actual_tokens:,}"
    out = [("estimated tokens", f"{e.estimated_tokens:,} (actual {actual}{_error(e.token_error)})")]
    if e.price_per_million_tokens is not None:
        out.append(
            (
                "cost",
                f"estimated {money(e.estimated_cost, e.currency)}, actual {money(e.actual_cost, e.currency)}"
                f" at {money(e.price_per_million_tokens, e.currency)} per 1M ({e.price_source})",
            )
        )
    if e.estimated_duration_s is not None or e.actual_duration_s is not None:
        measured = "unknown" if e.actual_duration_s is None else f"{e.actual_duration_s:.0f} s"
        out.append(
            (
                "training time",
                f"estimated {duration(e.estimated_duration_s)}, actual {measured}{_error(e.duration_error)}",
            )
        )
    return out
