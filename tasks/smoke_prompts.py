"""Smoke prompts: what the smoke stage asks and expects. Prefect-free, so flow parameters can use it."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field


class SmokePrompt(BaseModel):
    """One smoke check: a prompt and substrings the answer must contain (case-insensitive)."""

    prompt: str = Field(min_length=1)
    must_contain: list[str] = Field(default_factory=list)


def load_smoke_file(path: Path) -> list[SmokePrompt]:
    """Read ``smoke.jsonl`` (one ``{"prompt", "must_contain"}`` per line; blank lines skipped)."""
    prompts = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            prompts.append(SmokePrompt.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValueError) as exc:
            raise ValueError(f"{path}:{lineno}: invalid smoke prompt: {exc}") from exc
    return prompts
