"""LLM-as-judge: the fixed rubric prompt (``judge_prompt.md``) and reading the grade out of the reply."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from evaluation.evalset import EvalCase

PROMPT_FILE = Path(__file__).with_name("judge_prompt.md")
_GRADE = re.compile(r"grade\s*[:=]?\s*\**\s*([1-5])\b", re.IGNORECASE)
_BARE = re.compile(r"^\s*\**\s*([1-5])\b")


@functools.cache
def rubric() -> str:
    """The rubric template (placeholders ``{{conversation}}``, ``{{reference}}``, ``{{answer}}``)."""
    return PROMPT_FILE.read_text(encoding="utf-8")


def judge_prompt(case: EvalCase, answer: str) -> str:
    """The prompt that asks the judge model to grade ``answer`` for ``case``."""
    conversation = "\n".join(f"{m.role}: {m.content}" for m in case.input_messages())
    return (
        rubric()
        .replace("{{conversation}}", conversation)
        .replace("{{reference}}", case.reference or "(none)")
        .replace("{{answer}}", answer if answer.strip() else "(empty)")
    )


def parse_grade(reply: str) -> int | None:
    """The 1-5 grade in a judge's reply ("Grade: 4", or a bare leading digit), or None."""
    found = _GRADE.search(reply) or _BARE.match(reply)
    return int(found.group(1)) if found else None
