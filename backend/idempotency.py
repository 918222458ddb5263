"""``Idempotency-Key`` on creating POSTs (uploads, job creates, stored responses), with Stripe's semantics.

The first request with a key does the work and records which object it made; a repeat with the same key
and the same body gets that object again (its current state), for 24 hours; the same key with another body
is a 409. A repeat that arrives while the first is still working waits for it. Keys are per owner and
per route. A request that fails releases its key, so a retry does the work again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request

from backend.db import Database, now
from backend.errors import BackendHTTPError

HEADER = "Idempotency-Key"
RETENTION_S = 24 * 3600
MAX_KEY_CHARS = 255
# How long a repeat waits for the first request with its key before answering 409.
WAIT_FOR_FIRST_S = 60.0
_POLL_S = 0.05
# The tables of the objects a key can point at (an id column and an owner column each).
ObjectTable = Literal["files", "jobs", "responses"]


def fingerprint(payload: Any) -> str:
    """sha256 of the canonical JSON of what defines the request."""
    return hashlib.sha256(
        json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()


def request_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key``, or None; a malformed one is a 400."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_CHARS:
        raise BackendHTTPError(
            400,
            f"{HEADER} must be 1 to {MAX_KEY_CHARS} characters.",
            code="invalid_idempotency_key",
            param=HEADER,
        )
    return key


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a key: do the work (``replay_id`` None), or answer with ``replay_id``."""

    owner: str
    key: str
    route: str
    replay_id: str | None


class IdempotencyKeys:
    """The ``idempotency_keys`` table (created by ``backend.db.SCHEMA``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, owner: str, key: str, route: str, body: str, table: ObjectTable) -> Claim:
        """Reserve ``key`` for this request, or return the object the first request made (blocks while
        that request is still working). A recorded object no longer in ``table`` frees the key."""
        deadline = time.monotonic() + WAIT_FOR_FIRST_S
        while True:
            with self.db.tx() as conn:
                conn.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (now() - RETENTION_S,))
                row = conn.execute(
                    "SELECT fingerprint, object_id FROM idempotency_keys WHERE owner = ? AND key = ? AND route = ?",
                    (owner, key, route),
                ).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO idempotency_keys (owner, key, route, fingerprint, object_id, created_at)"
                        " VALUES (?,?,?,?,NULL,?)",
                        (owner, key, route, body, now()),
                    )
                    return Claim(owner, key, route, None)
                if row["fingerprint"] != body:
                    raise BackendHTTPError(
                        409,
                        f"This {HEADER} was already used with a different request body; use a new key for a "
                        "different request.",
                        code="idempotency_key_reused",
                        param=HEADER,
                    )
                object_id = row["object_id"]
                # ``table`` is one of ObjectTable's names, never request input.
                if (
                    object_id is not None
                    and conn.execute(
                        f"SELECT 1 FROM {table} WHERE id = ? AND owner = ?", (object_id, owner)
                    ).fetchone()
                ):
                    return Claim(owner, key, route, object_id)
                if object_id is not None:  # the object was deleted since: this request makes a new one
                    conn.execute(
                        "UPDATE idempotency_keys SET object_id = NULL, created_at = ? "
                        "WHERE owner = ? AND key = ? AND route = ?",
                        (now(), owner, key, route),
                    )
                    return Claim(owner, key, route, None)
            if time.monotonic() > deadline:
                raise BackendHTTPError(
                    409,
                    f"A request with this {HEADER} is still being processed; retry shortly.",
                    code="idempotency_key_in_use",
                    param=HEADER,
                )
            time.sleep(_POLL_S)

    def complete(self, claim: Claim, object_id: str) -> None:
        """Record the object the claimed request made."""
        self.db.execute(
            "UPDATE idempotency_keys SET object_id = ? WHERE owner = ? AND key = ? AND route = ?",
            (object_id, claim.owner, claim.key, claim.route),
        )

    def release(self, claim: Claim) -> None:
        """The claimed request failed: forget the key so that a retry does the work."""
        self.db.execute(
            "DELETE FROM idempotency_keys WHERE owner = ? AND key = ? AND route = ? AND object_id IS NULL",
            (claim.owner, claim.key, claim.route),
        )


async def create_once(
    db: Database,
    owner: str,
    request: Request,
    route: str,
    body: Any,
    *,
    table: ObjectTable,
    create: Callable[[], Awaitable[dict[str, Any]]],
    fetch: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    """Run ``create`` once per ``Idempotency-Key`` (plainly when the request has none); a repeat gets
    ``fetch`` of the object the first one made (kept in ``table``). ``body`` is what defines the request
    (fingerprinted)."""
    key = request_key(request)
    if key is None:
        return await create()
    keys = IdempotencyKeys(db)
    claim = await asyncio.to_thread(keys.claim, owner, key, route, fingerprint(body), table)
    if claim.replay_id is not None:
        return await asyncio.to_thread(fetch, claim.replay_id)
    try:
        made = await create()
    except BaseException:
        await asyncio.to_thread(keys.release, claim)
        raise
    await asyncio.to_thread(keys.complete, claim, str(made["id"]))
    return made
