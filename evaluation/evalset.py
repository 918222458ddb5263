"""Eval sets: JSONL cases (a prompt, an optional reference answer, optional checks), or cases derived from a
validation file (prompt = the messages before the last assistant turn, reference = that turn).

One line of ``eval.jsonl`` / ``smoke.jsonl``::

    {"prompt": "Where is my order A-1?", "reference": "Hi there! ...", "must_contain": ["Hi"],
     "must_not_contain": ["sorry"], "regex": "A-\\d+", "json_schema": {...}, "max_chars": 400}

``messages`` (a list of ``{"role", "content"}``) may replace ``prompt`` for multi-turn or system-prompted
cases. A case with neither a reference nor a check only asks for a non-empty answer (the old smoke rule).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

EvalRole = Literal["user", "assistant", "system", "developer"]
SetKind = Literal["eval", "smoke"]


class EvalSetError(ValueError):
    """An eval or smoke file is unreadable or has an invalid line; the message names ``file:line: field``."""


class EvalMessage(BaseModel):
    """One prompt message (the roles the Responses API accepts as input)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: EvalRole
    content: str


class EvalCase(BaseModel):
    """One prompt with what a good answer looks like."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(default=None, description="Optional name shown in tables")
    prompt: str | None = Field(default=None, min_length=1, description="A single user message")
    messages: list[EvalMessage] | None = Field(
        default=None, min_length=1, description="A conversation instead of prompt"
    )
    reference: str | None = Field(
        default=None, min_length=1, description="The expected answer (exact match, token F1, ROUGE-L)"
    )
    must_contain: list[str] = Field(
        default_factory=list, description="Substrings required (case-insensitive)"
    )
    must_not_contain: list[str] = Field(
        default_factory=list, description="Substrings forbidden (case-insensitive)"
    )
    regex: str | None = Field(default=None, description="Python regex the answer must match (re.search)")
    json_schema: dict[str, Any] | None = Field(
        default=None, description="The answer must be JSON valid against this schema"
    )
    max_chars: int | None = Field(default=None, ge=1, description="Longest acceptable answer")

    @field_validator("must_contain", "must_not_contain")
    @classmethod
    def _no_empty_needles(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("must not contain an empty string")
        return value

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("json_schema")
    @classmethod
    def _schema_is_valid(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from jsonschema import SchemaError
            from jsonschema.validators import validator_for

            try:
                validator_for(value).check_schema(value)
            except SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value

    @model_validator(mode="after")
    def _one_prompt(self) -> EvalCase:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.messages is not None and self.messages[-1].role == "assistant":
            raise ValueError("messages must not end with an assistant turn (that is the reference)")
        return self

    def input_messages(self) -> list[EvalMessage]:
        """The conversation sent to the model."""
        if self.messages is not None:
            return list(self.messages)
        return [EvalMessage(role="user", content=self.prompt or "")]

    def prompt_text(self) -> str:
        """The last non-assistant message, for tables."""
        return self.prompt if self.prompt is not None else (self.messages or [])[-1].content

    def check_names(self) -> list[str]:
        """The checks this case runs, in a fixed order; ``non_empty`` when it has nothing else to judge by."""
        names = [
            name
            for name, present in (
                ("must_contain", bool(self.must_contain)),
                ("must_not_contain", bool(self.must_not_contain)),
                ("regex", self.regex is not None),
                ("json_schema", self.json_schema is not None),
                ("max_chars", self.max_chars is not None),
            )
            if present
        ]
        if not names and self.reference is None:
            return ["non_empty"]
        return names


@dataclass(frozen=True)
class EvalSet:
    """Cases from one source; ``skipped`` counts source lines that could not become cases."""

    kind: SetKind
    source: str
    cases: list[EvalCase]
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def fingerprint(self, **settings: Any) -> str:
        """Stable hash of the cases plus whatever else changes the scores (scoring version, output cap)."""
        payload = {
            "cases": [c.model_dump(mode="json", exclude_none=True) for c in self.cases],
            "settings": settings,
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _issue(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {msg}{extra}" if loc else f"{msg}{extra}"


def load_eval_file(path: Path, kind: SetKind = "eval") -> EvalSet:
    """Read an eval or smoke JSONL file (blank lines skipped); raise ``EvalSetError`` naming the bad line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalSetError(f"{path}: cannot read {kind} file: {exc}") from None
    cases: list[EvalCase] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(raw, dict):
            raise EvalSetError(f"{path}:{lineno}: expected a JSON object, got {type(raw).__name__}")
        try:
            cases.append(EvalCase.model_validate(raw))
        except ValidationError as exc:
            raise EvalSetError(f"{path}:{lineno}: {_issue(exc)}") from None
    if not cases:
        raise EvalSetError(f"{path}: no {kind} cases (the file is empty)")
    return EvalSet(kind=kind, source=str(path), cases=cases)


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return None


def _case_from_chat(messages: list[Any]) -> EvalCase | None:
    """Prompt = the turns before the last assistant turn, reference = its text; None when not expressible."""
    last = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
        default=-1,
    )
    if last <= 0:
        return None
    reference = _text(messages[last].get("content"))
    if not reference or not reference.strip() or messages[last].get("tool_calls"):
        return None
    prompt: list[EvalMessage] = []
    for m in messages[:last]:
        role, content = m.get("role"), _text(m.get("content"))
        if role not in ("user", "assistant", "system", "developer") or content is None or m.get("tool_calls"):
            return None  # tool turns have no Responses-input equivalent here
        prompt.append(EvalMessage(role=role, content=content))
    if prompt[-1].role == "assistant":
        return None
    return EvalCase(messages=prompt, reference=reference.strip())


def cases_from_dataset_file(path: Path) -> EvalSet:
    """An eval set from a validation file: chat lines (last assistant turn) or preference lines (preferred)."""
    path = Path(path)
    cases: list[EvalCase] = []
    skipped = 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalSetError(f"{path}: cannot read validation file: {exc}") from None
    for line in lines:
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        case: EvalCase | None = None
        if isinstance(raw, dict) and isinstance(raw.get("messages"), list):
            case = _case_from_chat(raw["messages"])
        elif isinstance(raw, dict) and isinstance(raw.get("input"), dict):
            preferred = raw.get("preferred_output")
            msgs = raw["input"].get("messages")
            if isinstance(preferred, list) and preferred and isinstance(msgs, list):
                case = _case_from_chat([*msgs, preferred[0]])
        if case is None:
            skipped += 1
        else:
            cases.append(case)
    notes = [f"{skipped} line(s) without a usable prompt/answer pair skipped"] if skipped else []
    return EvalSet(kind="eval", source=str(path), cases=cases, skipped=skipped, notes=notes)
