"""Fault injection for reliability tests: an ASGI middleware that fails a seeded share of API requests.

Off unless ``BackendSettings.fault_rates`` is set (env ``FTPIPE_BACKEND_FAULT_RATES``, flag ``--fault-rates``).
The spec is a comma-separated list of ``key=rate``: ``key`` is a route group (``all``, ``files``, ``jobs``,
``events``, ``checkpoints``, ``responses``) spreading ``rate`` evenly over the enabled kinds, or
``group.kind`` setting one kind's rate. A group without entries falls back to ``all``. Examples:
``all=0.2`` / ``all=0.2,events=0`` / ``files.drop_after=0.5``.

Kinds that fail *before* the handler runs: ``429`` (with ``Retry-After``), ``500``, ``502``, ``503`` and
``drop`` (the connection is closed without any response). Kinds that fail *after* the server did the work
(the upload is stored, the job created...): ``500_after``, ``drop_after`` and ``slow`` (the real answer is
sent only after ``fault_slow_s`` seconds, i.e. after the client gave up). These prove idempotency.

``GET <prefix>/_faults`` (needs the key, like every route but health; only exists while faults are enabled) returns the counters;
``POST <prefix>/_faults`` with ``{"enabled": false}`` pauses injection (tests read fault-free listings).
The health route is never faulted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backend.errors import error_body
from contract.wire import API_PREFIXES

if TYPE_CHECKING:  # annotations only: BackendSettings validates fault specs here without the web stack
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("backend.faults")

GROUPS = ("all", "files", "jobs", "events", "checkpoints", "responses")
BEFORE_KINDS = ("429", "500", "502", "503", "drop")
AFTER_KINDS = ("500_after", "drop_after", "slow")
KINDS = BEFORE_KINDS + AFTER_KINDS
DEBUG_PATH = "/_faults"
# A broken transfer declares this many body bytes and sends none (fallback when the socket is unreachable).
_BROKEN_LENGTH = b"64"
RECENT_FAULTS = 1000


class FaultSpecError(ValueError):
    """The fault spec string is malformed."""


@dataclass(frozen=True)
class FaultConfig:
    """Resolved per-group kind rates plus the knobs shared by all kinds."""

    rates: dict[str, dict[str, float]]
    seed: int = 0
    slow_s: float = 65.0
    retry_after_s: float = 1.0

    @property
    def enabled(self) -> bool:
        """True when at least one kind of one group has a positive rate."""
        return any(r > 0 for table in self.rates.values() for r in table.values())

    def table(self, group: str) -> dict[str, float]:
        """Kind -> rate for a group (falls back to ``all``)."""
        return self.rates.get(group) or self.rates.get("all", {})


def parse_kinds(text: str) -> tuple[str, ...]:
    """Comma-separated kind names (empty: all kinds)."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip()) or KINDS
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise FaultSpecError(f"unknown fault kind(s) {unknown}; known: {', '.join(KINDS)}")
    return kinds


def parse_rates(spec: str, kinds: tuple[str, ...] = KINDS) -> dict[str, dict[str, float]]:
    """Parse ``all=0.2,files.drop_after=0.1`` into group -> kind -> rate (each group's sum <= 1)."""
    totals: dict[str, float] = {}
    explicit: dict[str, dict[str, float]] = {}
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        group, _, kind = key.strip().partition(".")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not sep or not 0.0 <= rate <= 1.0:
            raise FaultSpecError(f"bad fault rate {item!r}: expected key=rate with 0 <= rate <= 1")
        if group not in GROUPS:
            raise FaultSpecError(f"unknown fault group {group!r}; known: {', '.join(GROUPS)}")
        if kind and kind not in KINDS:
            raise FaultSpecError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        if kind:
            explicit.setdefault(group, {})[kind] = rate
        else:
            totals[group] = rate
    rates: dict[str, dict[str, float]] = {}
    for group in set(totals) | set(explicit):
        share = totals.get(group, 0.0) / len(kinds)
        table = {k: share for k in kinds} if group in totals else {}
        table.update(explicit.get(group, {}))
        if sum(table.values()) > 1.0 + 1e-9:
            raise FaultSpecError(f"fault rates of group {group!r} add up to more than 1")
        rates[group] = table
    return rates


def route_group(path: str) -> str | None:
    """The fault group of an API path; None for paths that are never faulted (health, debug route)."""
    for prefix in API_PREFIXES:
        if path.startswith(prefix + "/") or path == prefix:
            path = path[len(prefix) :]
            break
    path = path.rstrip("/")
    if path in ("/health", DEBUG_PATH):
        return None
    if path.startswith("/files"):
        return "files"
    if path.startswith("/fine_tuning/jobs"):
        if path.endswith("/events"):
            return "events"
        if path.endswith("/checkpoints"):
            return "checkpoints"
        return "jobs"
    if path.startswith("/responses"):
        return "responses"
    return "all"


@dataclass
class FaultStats:
    """Requests seen and faults injected, per group and kind."""

    requests: Counter[str] = field(default_factory=Counter)
    injected: dict[str, Counter[str]] = field(default_factory=dict)
    # The latest faults as "KIND METHOD PATH" (bounded), so tests can see which call was hit.
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_FAULTS))

    def record(self, group: str, kind: str, method: str, path: str) -> None:
        """Count one injected fault."""
        self.injected.setdefault(group, Counter())[kind] += 1
        self.recent.append(f"{kind} {method} {path}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters."""
        injected = {g: dict(c) for g, c in sorted(self.injected.items())}
        return {
            "requests": dict(self.requests),
            "injected": injected,
            "total_requests": sum(self.requests.values()),
            "total_injected": sum(sum(c.values()) for c in self.injected.values()),
            "recent": list(self.recent),
        }


class FaultInjectionMiddleware:
    """Fails a seeded share of API requests with the configured kinds; counts every fault."""

    def __init__(self, app: ASGIApp, config: FaultConfig) -> None:
        self.app = app
        self.config = config
        self.rng = random.Random(config.seed)
        self.stats = FaultStats()
        self.active = True

    def pick(self, group: str) -> str | None:
        """Draw the fault kind for one request of ``group`` (None: no fault)."""
        draw = self.rng.random()
        acc = 0.0
        for kind, rate in sorted(self.config.table(group).items()):
            acc += rate
            if draw < acc:
                return kind
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path.rstrip("/").endswith(DEBUG_PATH) and any(path.startswith(p + "/") for p in API_PREFIXES):
            await self._debug(scope, receive, send)
            return
        group = route_group(path)
        if group is None:
            await self.app(scope, receive, send)
            return
        self.stats.requests[group] += 1
        kind = self.pick(group) if self.active else None
        if kind is None:
            await self.app(scope, receive, send)
            return
        self.stats.record(group, kind, scope["method"], path)
        log.info("fault injected: %s on %s %s (group %s)", kind, scope["method"], path, group)
        if kind in ("429", "500", "502", "503"):
            await _send_error(send, int(kind), self.config.retry_after_s)
        elif kind == "drop":
            await _drop(receive, send)
        else:
            await self._after(kind, scope, receive, send)

    async def _after(self, kind: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the real handler, then lose (or delay) its answer."""
        started = False

        async def swallow(message: Message) -> None:
            nonlocal started
            if message["type"] != "http.response.start" or started:
                return
            started = True
            if kind == "500_after":
                await _send_error(send, 500, self.config.retry_after_s)
            else:
                await _drop(receive, send)

        async def late(message: Message) -> None:
            if message["type"] == "http.response.start":
                await asyncio.sleep(self.config.slow_s)
            await send(message)

        await self.app(scope, receive, late if kind == "slow" else swallow)

    async def _debug(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            body = b""
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            try:
                self.active = bool(json.loads(body or b"{}").get("enabled", self.active))
            except (ValueError, AttributeError):
                await _send_json(send, 400, error_body(400, "expected {'enabled': bool}", None, None))
                return
        payload = {
            "enabled": self.active,
            "seed": self.config.seed,
            "rates": self.config.rates,
            **self.stats.as_dict(),
        }
        await _send_json(send, 200, payload)


async def _send_json(send: Send, status: int, payload: Any, extra: list[tuple[bytes, bytes]] = []) -> None:  # noqa: B006 - never mutated
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + extra})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, status: int, retry_after_s: float) -> None:
    message = {
        429: "Rate limit reached (injected fault).",
        502: "Bad gateway (injected fault).",
        503: "Service unavailable (injected fault).",
    }.get(status, "The server had an error while processing your request (injected fault).")
    extra = [(b"retry-after", f"{retry_after_s:g}".encode())] if status in (429, 503) else []
    code = "rate_limit_exceeded" if status == 429 else "injected_fault"
    await _send_json(send, status, error_body(status, message, code, None), extra)


async def _drop(receive: Receive, send: Send) -> None:
    """Close the connection without an answer; fall back to a truncated body when the socket is hidden."""
    # uvicorn passes its RequestResponseCycle.receive; its transport is the client's socket.
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        transport.abort()
        # Let connection_lost run so uvicorn knows the peer is gone and writes nothing more.
        for _ in range(3):
            await asyncio.sleep(0)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", _BROKEN_LENGTH)],
        }
    )
    # Returning without the body makes the server close the connection mid-response.


def config_from_settings(
    rates: str, kinds: str, seed: int, slow_s: float, retry_after_s: float
) -> FaultConfig:
    """Build the config from the settings' strings (raises FaultSpecError on a bad spec)."""
    return FaultConfig(
        rates=parse_rates(rates, parse_kinds(kinds)), seed=seed, slow_s=slow_s, retry_after_s=retry_after_s
    )
