"""Small JSONL datasets shared by the test layers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def chat_example(i: int, colours: Sequence[str] = ("blue",)) -> dict[str, object]:
    """One valid supervised chat example about item ``i`` (colours cycle so answers can differ)."""
    return {
        "messages": [
            {"role": "system", "content": "You answer with the colour of the item."},
            {"role": "user", "content": f"What colour is item number {i}?"},
            {"role": "assistant", "content": f"Item {i} is {colours[i % len(colours)]}."},
        ]
    }


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows as JSONL (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
