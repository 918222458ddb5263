"""Eval answers kept in the state dir, so a re-run (or another run on the same base model) asks nothing twice.

An entry is one greedy ``store: false`` Responses call: scoped by the server (its id in the local indexes), the
end user and the model id, and keyed by the hash of the whole request body less the model (the case's
messages, ``max_output_tokens``, ``temperature``, ``instructions``), so a changed case, output cap or judge
rubric is simply another key. Only model ids that always name the same weights are cached (``cacheable``).
One JSON file per scope (``<state dir>/eval-cache/<hash>.json``), merged under a key lock and replaced
atomically (``tasks.state``); a missing, corrupt or foreign file reads as empty, so the cache can only save
calls, never break a run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.models import ResponseCreateRequest
from tasks.state import JsonIndex, key_lock, scoped_key

CACHE_DIR = "eval-cache"
# Bump when what an entry means changes (e.g. the request shape), so old files are ignored, not misread.
CACHE_FORMAT = 1
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
        data = self._index(scope).read()
        entries = data.get("answers")
        # A file not written for this scope (or unreadable) holds nothing to trust.
        if data.get("scope") != scope or not isinstance(entries, dict):
            return {}
        return {k: e for k, raw in entries.items() if isinstance(k, str) and (e := _entry(raw)) is not None}

    def store(self, model: str, answers: dict[str, CachedAnswer]) -> None:
        """Add ``answers`` (by ``request_key``) to ``model``'s entries; a model that is never cached is skipped.

        Read-merge-write under the scope's key lock, so concurrent runs of the same model keep each other's
        entries; the file is replaced atomically.
        """
        scope = self._scope(model)
        if scope is None or not answers:
            return
        index = self._index(scope)
        new = {
            k: {"text": a.text, "output_tokens": a.output_tokens, "latency_s": a.latency_s}
            for k, a in answers.items()
        }
        with key_lock(self.state_dir, "eval-cache|" + scope):
            data = index.read()
            current = data.get("answers") if data.get("scope") == scope else None
            if data.get("scope") != scope:
                index.put("scope", scope)  # first: answers are never read without their scope beside them
            index.put("answers", {**(current if isinstance(current, dict) else {}), **new})
