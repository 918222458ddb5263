"""Eval answers kept in the state dir, so a re-run (or another run on the same base model) asks nothing twice.

An entry is one greedy ``store: false`` Responses call: scoped by the server (its id in the local indexes), the
end user and the model id, and keyed by the hash of the whole request body less the model (the case's
messages, ``max_output_tokens``, ``temperature``, ``instructions``), so a changed case, output cap or judge
rubric is simply another key. Only model ids that always name the same weights are cached (``cacheable``).
One JSON file per scope (``<state dir>/eval-cache/<hash>.json``), merged under its lock and replaced
atomically (``tasks.state``); a missing, corrupt or foreign file reads as empty, so the cache can only save
calls, never break a run. Every fine-tune adds a few model ids (its checkpoints), so the folder keeps the
``CACHE_KEEP`` most recently used scopes (a read counts as a use: a base model asked by every run stays).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.models import ResponseCreateRequest
from tasks.state import JsonIndex, scoped_key

CACHE_DIR = "eval-cache"
# Bump when what an entry means changes (e.g. the request shape), so old files are ignored, not misread.
CACHE_FORMAT = 1
# About 40 KB per model id answered on the sample's 105 prompts: ~12 MB at most.
CACHE_KEEP = 300
_EMBEDDED_PREFIX = "embedded:"


@dataclass(frozen=True)
class CachedAnswer:
    """What a cached call answered (``latency_s``: how long the original call took)."""

    text: str
    output_tokens: int | None = None
    latency_s: float | None = None


def _builtin_version(model: str) -> str | None:
    """The build version of an embedded built-in base model (None when ``model`` is not one)."""
    from backend.trainer.base_models import BUILD_VERSION, BUILTIN_MODELS

    return BUILD_VERSION if model in BUILTIN_MODELS else None


def model_identity(model: str, server_id: str) -> str | None:
    """The id under which ``model``'s answers may be cached on this server, or None when they may not.

    Greedy answers are a function of the weights, so only ids that can never name other weights qualify:
    - ``ft:`` ids (fine-tuned models and their ``:ckpt-step-N`` checkpoints) name one job's output on MKA1,
      OpenAI and the embedded backend alike (the embedded one derives them from the random job id);
    - the embedded backend's built-in bases (``local:tiny-chat``...), built from a fixed seed by a versioned
      recipe: the build version is part of the identity, so a new recipe is a new identity.
    Anything else may change under the same name: a remote base id can be an alias the provider re-points
    (``gpt-4o-mini``, a gateway's default model), an embedded alias is server configuration, and a
    ``local:/abs/dir`` model is whatever is in that folder today. Those are always asked.
    """
    if model.startswith("ft:"):
        return model
    if server_id.startswith(_EMBEDDED_PREFIX):
        version = _builtin_version(model)
        if version is not None:
            return f"{model}@{version}"
    return None


def request_key(request: ResponseCreateRequest) -> str:
    """Hash of the request body less the model (and ``store``, which does not change the answer)."""
    body = request.model_dump(mode="json", exclude_none=True, exclude={"model", "store"})
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _entry(raw: Any) -> CachedAnswer | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("text"), str):
        return None
    tokens, latency = raw.get("output_tokens"), raw.get("latency_s")
    return CachedAnswer(
        text=raw["text"],
        output_tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
        latency_s=float(latency)
        if isinstance(latency, int | float) and not isinstance(latency, bool)
        else None,
    )


class AnswerCache:
    """The cached answers of one server for one end user."""

    def __init__(self, state_dir: Path, server_id: str, on_behalf_of: str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.server_id = server_id
        self.on_behalf_of = on_behalf_of

    def _scope(self, model: str) -> str | None:
        identity = model_identity(model, self.server_id)
        if identity is None:
            return None
        return scoped_key(self.server_id, self.on_behalf_of, f"v{CACHE_FORMAT}|{identity}")

    def _index(self, scope: str) -> JsonIndex:
        name = hashlib.sha256(scope.encode("utf-8")).hexdigest()[:32] + ".json"
        return JsonIndex(self.state_dir / CACHE_DIR / name)

    def load(self, model: str) -> dict[str, CachedAnswer] | None:
        """Every cached answer of ``model`` by ``request_key`` (None: the model is never cached)."""
        scope = self._scope(model)
        if scope is None:
            return None
        index = self._index(scope)
        data = index.read()
        if data:
            with contextlib.suppress(OSError):  # the pruning's "recently used": a stale stamp costs nothing
                os.utime(index.path)
        entries = data.get("answers")
        # A file not written for this scope (or unreadable) holds nothing to trust.
        if data.get("scope") != scope or not isinstance(entries, dict):
            return {}
        return {k: e for k, raw in entries.items() if isinstance(k, str) and (e := _entry(raw)) is not None}

    def store(self, model: str, answers: dict[str, CachedAnswer]) -> None:
        """Add ``answers`` (by ``request_key``) to ``model``'s entries; a model that is never cached is skipped.

        Read-merge-write under the file's lock, so concurrent runs of the same model keep each other's
        entries; the file is replaced atomically. Then the least recently used scopes beyond ``CACHE_KEEP`` go.
        """
        scope = self._scope(model)
        if scope is None or not answers:
            return
        index = self._index(scope)
        new = {
            k: {"text": a.text, "output_tokens": a.output_tokens, "latency_s": a.latency_s}
            for k, a in answers.items()
        }

        def merge(data: dict[str, Any]) -> None:
            current = data.get("answers") if data.get("scope") == scope else None
            data.clear()
            data.update(scope=scope, answers={**(current if isinstance(current, dict) else {}), **new})

        index.update(merge)
        prune(self.state_dir / CACHE_DIR, CACHE_KEEP)


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete the cache files of ``folder`` beyond the ``keep`` most recently used; the deleted ones.

    A file whose lock another process holds (a run storing into it right now) is skipped, not waited for.
    """
    try:
        files = [(p.stat().st_mtime, p) for p in folder.glob("*.json")]
    except OSError:
        return []
    if len(files) <= keep:
        return []
    gone: list[Path] = []
    for _, path in sorted(files, reverse=True)[keep:]:
        lock_path = path.with_suffix(path.suffix + ".lock")
        try:
            with open(lock_path, "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink(missing_ok=True)
                lock_path.unlink(missing_ok=True)
        except OSError:  # held (BlockingIOError) or already gone: left for the next prune
            continue
        gone.append(path)
    return gone
