"""Run the JSON Schema on one parsed example and turn its errors into (field path, plain message) pairs."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, relevance

from schemas import SchemaKind, load_schema

_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
# When one field has several schema errors, report only the most useful one.
_PRIORITY = {
    "type": 0,
    "required": 1,
    "additionalProperties": 2,
    "minItems": 3,
    "maxItems": 3,
    "enum": 4,
    "const": 4,
    "not": 5,
    "minLength": 6,
    "pattern": 7,
    "contains": 8,
}


@cache
def validator_for(kind: SchemaKind) -> Draft202012Validator:
    """The compiled (once per process) validator for ``kind``."""
    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def json_type(value: object) -> str:
    """JSON name of a Python value's type ("null" for None)."""
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def short_repr(value: object, limit: int = 40) -> str:
    """repr() cut to ``limit`` characters so messages stay on one screen line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(path: Iterable[object]) -> str:
    return ".".join(str(p) for p in path) or "$"


def _leaves(error: ValidationError) -> list[ValidationError]:
    # anyOf/oneOf keep their sub-errors in .context; descend to the deepest, most relevant one.
    if error.context:
        best = min(error.context, key=relevance)
        return _leaves(best)
    return [error]


def _translate(e: ValidationError) -> list[tuple[str, str]]:
    path = list(e.absolute_path)
    field = _join(path)
    key = str(path[-1]) if path else "$"
    inst: Any = e.instance
    value: Any = e.validator_value
    match e.validator:
        case "required":
            out = []
            for missing in value:
                if isinstance(inst, dict) and missing not in inst:
                    if missing == "content" and inst.get("role") == "assistant":
                        msg = "assistant message needs 'content' (or 'tool_calls')"
                    elif missing == "content":
                        msg = f"{inst.get('role', 'this')} message needs a 'content' string"
                    elif missing == "tool_call_id":
                        msg = "tool message needs 'tool_call_id' naming the tool call it answers"
                    else:
                        msg = f"required key '{missing}' is missing"
                    out.append((_join([*path, missing]), msg))
            return out
        case "additionalProperties":
            allowed = list(e.schema.get("properties", {})) if isinstance(e.schema, dict) else []
            extras = [k for k in inst if k not in allowed] if isinstance(inst, dict) else []
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            return [(_join([*path, k]), f"unrecognised key {short_repr(k, 30)}{hint}") for k in extras]
        case "type" if not path:
            return [(field, f"each line must be a JSON object {{...}}, got {json_type(inst)}")]
        case "type" if key == "content":
            return [(field, f"content must be a string, got {json_type(inst)}")]
        case "type":
            want = value if isinstance(value, str) else " or ".join(value)
            return [(field, f"{key} must be {_article(want)} {want}, got {json_type(inst)}")]
        case "enum" if key == "role":
            return [(field, f"unknown role {short_repr(inst)}; expected one of {', '.join(value)}")]
        case "enum" if key == "weight":
            return [(field, f"weight must be 0 or 1, got {short_repr(inst)}")]
        case "enum":
            return [(field, f"{short_repr(inst)} is not one of {short_repr(e.validator_value, 80)}")]
        case "const" if key == "role":
            return [(field, f"role must be {e.validator_value!r} here, got {short_repr(inst)}")]
        case "const":
            return [(field, f"{key} must be {e.validator_value!r}, got {short_repr(inst)}")]
        case "minItems" if key in ("preferred_output", "non_preferred_output"):
            return [(field, f"{key} must hold exactly one assistant message, got 0")]
        case "minItems":
            return [(field, f"{key} must be a non-empty list")]
        case "maxItems":
            return [(field, f"{key} must hold exactly one assistant message, got {len(inst)}")]
        case "minLength" | "pattern":
            return [(field, f"{key} is empty or only whitespace")]
        case "contains":
            return [(field, "no assistant message; each example needs at least one assistant reply")]
        case "not":
            where = "tool" if key == "tool_call_id" else "assistant"
            return [(field, f"'{key}' is only allowed on {where} messages")]
        case _:
            return [(field, short_repr(e.message, 150))]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def schema_issues(obj: object, kind: SchemaKind) -> list[tuple[str, str]]:
    """Every schema violation of ``obj`` as (dotted field path, message), one per field, sorted by path."""
    best: dict[str, tuple[int, str]] = {}
    errors = sorted(validator_for(kind).iter_errors(obj), key=relevance)
    for top in errors:
        for leaf in _leaves(top):
            rank = _PRIORITY.get(str(leaf.validator), 9)
            for field, message in _translate(leaf):
                if field not in best or rank < best[field][0]:
                    best[field] = (rank, message)
    return [(field, best[field][1]) for field in sorted(best, key=_path_key)]


def _path_key(field: str) -> tuple[tuple[int, int | str], ...]:
    # Sort "messages.10" after "messages.2".
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in field.split("."))
