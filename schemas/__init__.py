"""JSON Schemas (Draft 2020-12) for the chat and preference fine-tuning JSONL formats.

The ``*.schema.json`` files are package data and the source of truth for what a valid example is;
``validation/`` implements a fast path that must agree with them (see tests/validation).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, Literal

SchemaKind = Literal["chat", "preference"]
SCHEMA_KINDS: tuple[SchemaKind, ...] = ("chat", "preference")

__all__ = ["SCHEMA_KINDS", "SchemaKind", "load_schema"]


@cache
def _load(kind: str) -> dict[str, Any]:
    text = resources.files(__name__).joinpath(f"{kind}.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_schema(kind: SchemaKind) -> dict[str, Any]:
    """Return the parsed JSON Schema for ``kind`` ("chat" or "preference"); cached, do not mutate."""
    if kind not in SCHEMA_KINDS:
        raise ValueError(f"unknown schema kind {kind!r}; expected one of {', '.join(SCHEMA_KINDS)}")
    return _load(kind)
