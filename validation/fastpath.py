"""Hand-written structural checks that implement exactly the rules of ``schemas/*.schema.json``.

They exist for speed: a compiled jsonschema validator costs ~50x an ``orjson.loads`` per line, so every
line goes through these checks and only the lines they flag are re-run through the schema to produce the
reported error text (see ``schema_errors``). Each function returns the dotted field paths it found wrong
(an empty list means "valid"). tests/validation/test_validation_agreement.py keeps the two in lock-step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from validation.tokens import TOKENS_PER_EXAMPLE, TOKENS_PER_MESSAGE

ROLES = frozenset(("system", "developer", "user", "assistant", "tool"))
MESSAGE_KEYS = frozenset(("role", "content", "name", "weight", "tool_calls", "tool_call_id"))
CHAT_KEYS = frozenset(("messages", "tools", "parallel_tool_calls"))
PREFERENCE_KEYS = frozenset(("input", "preferred_output", "non_preferred_output"))
TOOL_CALL_KEYS = frozenset(("id", "type", "function"))
TOOL_CALL_FUNCTION_KEYS = frozenset(("name", "arguments"))


def _is_text(value: object) -> bool:
    # Mirrors {"type": "string", "minLength": 1, "pattern": "\\S"}; str.isspace and re's \s agree.
    return type(value) is str and value != "" and not value.isspace()


def _is_nonempty_str(value: object) -> bool:
    return type(value) is str and value != ""


def _tool_call_errors(call: object, path: str, out: list[str]) -> None:
    if type(call) is not dict:
        out.append(path)
        return
    if not call.keys() <= TOOL_CALL_KEYS:
        out.extend(f"{path}.{k}" for k in call if k not in TOOL_CALL_KEYS)
    if not _is_nonempty_str(call.get("id")):
        out.append(f"{path}.id")
    if call.get("type") != "function":
        out.append(f"{path}.type")
    fn = call.get("function")
    if type(fn) is not dict:
        out.append(f"{path}.function")
        return
    if not fn.keys() <= TOOL_CALL_FUNCTION_KEYS:
        out.extend(f"{path}.function.{k}" for k in fn if k not in TOOL_CALL_FUNCTION_KEYS)
    if not _is_nonempty_str(fn.get("name")):
        out.append(f"{path}.function.name")
    if type(fn.get("arguments")) is not str:
        out.append(f"{path}.function.arguments")


def _message_errors(m: object, path: str, out: list[str]) -> None:
    """Check one message; appends wrong field paths to ``out``."""
    if type(m) is not dict:
        out.append(path)
        return
    role = m.get("role")
    content = m.get("content")
    # Fast exit for the overwhelmingly common {"role": ..., "content": "..."} message.
    if len(m) == 2 and type(role) is str and role in ROLES and role != "tool" and _is_text(content):
        return
    if not m.keys() <= MESSAGE_KEYS:
        out.extend(f"{path}.{k}" for k in m if k not in MESSAGE_KEYS)
    if "role" not in m or type(role) is not str or role not in ROLES:
        out.append(f"{path}.role")
    if "content" in m and content is not None and type(content) is not str:
        out.append(f"{path}.content")
    if "name" in m and not _is_nonempty_str(m["name"]):
        out.append(f"{path}.name")
    if "weight" in m:
        w = m["weight"]
        if type(w) is bool or type(w) not in (int, float) or w not in (0, 1):
            out.append(f"{path}.weight")
    if "tool_calls" in m:
        calls = m["tool_calls"]
        if type(calls) is not list or not calls:
            out.append(f"{path}.tool_calls")
        else:
            for j, call in enumerate(calls):
                _tool_call_errors(call, f"{path}.tool_calls.{j}", out)
    if "tool_call_id" in m and not _is_nonempty_str(m["tool_call_id"]):
        out.append(f"{path}.tool_call_id")
    if role == "assistant":
        if "tool_calls" not in m and not _is_text(content):
            out.append(f"{path}.content")
    else:
        if not _is_text(content):
            out.append(f"{path}.content")
        if "weight" in m:
            out.append(f"{path}.weight")
        if "tool_calls" in m:
            out.append(f"{path}.tool_calls")
    if role == "tool":
        if "tool_call_id" not in m:
            out.append(f"{path}.tool_call_id")
    elif "tool_call_id" in m:
        out.append(f"{path}.tool_call_id")


def _tools_errors(tools: object, path: str, out: list[str]) -> None:
    if type(tools) is not list:
        out.append(path)
        return
    for i, tool in enumerate(tools):
        p = f"{path}.{i}"
        if type(tool) is not dict:
            out.append(p)
            continue
        if tool.get("type") != "function":
            out.append(f"{p}.type")
        fn = tool.get("function")
        if type(fn) is not dict:
            out.append(f"{p}.function")
            continue
        if not _is_nonempty_str(fn.get("name")):
            out.append(f"{p}.function.name")
        if "description" in fn and type(fn["description"]) is not str:
            out.append(f"{p}.function.description")
        if "parameters" in fn and type(fn["parameters"]) is not dict:
            out.append(f"{p}.function.parameters")
        if "strict" in fn and type(fn["strict"]) is not bool:
            out.append(f"{p}.function.strict")


def _conversation_errors(obj: dict[str, Any], path: str, out: list[str], *, need_assistant: bool) -> None:
    """Checks ``messages``/``tools``/``parallel_tool_calls`` of a chat example or a preference input."""
    prefix = f"{path}." if path else ""
    if not obj.keys() <= CHAT_KEYS:
        out.extend(f"{prefix}{k}" for k in obj if k not in CHAT_KEYS)
    msgs = obj.get("messages")
    if type(msgs) is not list or not msgs:
        out.append(f"{prefix}messages")
    else:
        has_assistant = False
        for i, m in enumerate(msgs):
            _message_errors(m, f"{prefix}messages.{i}", out)
            if not has_assistant and type(m) is dict and m.get("role") == "assistant" and "role" in m:
                has_assistant = True
        if need_assistant and not has_assistant:
            out.append(f"{prefix}messages")
    if "tools" in obj:
        _tools_errors(obj["tools"], f"{prefix}tools", out)
    if "parallel_tool_calls" in obj and type(obj["parallel_tool_calls"]) is not bool:
        out.append(f"{prefix}parallel_tool_calls")


def chat_errors(obj: object) -> list[str]:
    """Field paths that make ``obj`` invalid against chat.schema.json ("$" = the whole line)."""
    if type(obj) is not dict:
        return ["$"]
    out: list[str] = []
    _conversation_errors(obj, "", out, need_assistant=True)
    return out


def _output_errors(obj: dict[str, Any], key: str, out: list[str]) -> None:
    value = obj.get(key)
    if type(value) is not list or len(value) != 1:
        out.append(key)
        if type(value) is not list:
            return
    for i, m in enumerate(value):
        p = f"{key}.{i}"
        _message_errors(m, p, out)
        if type(m) is dict and m.get("role") != "assistant":
            out.append(f"{p}.role")


def preference_errors(obj: object) -> list[str]:
    """Field paths that make ``obj`` invalid against preference.schema.json."""
    if type(obj) is not dict:
        return ["$"]
    out: list[str] = []
    if not obj.keys() <= PREFERENCE_KEYS:
        out.extend(k for k in obj if k not in PREFERENCE_KEYS)
    inp = obj.get("input")
    if type(inp) is not dict:
        out.append("input")
    else:
        _conversation_errors(inp, "input", out, need_assistant=False)
    _output_errors(obj, "preferred_output", out)
    _output_errors(obj, "non_preferred_output", out)
    return out


# simple_chat packs an example's counts into one int so the hot loop does one addition per example instead
# of a dozen: 64-bit fields, so a file-level sum of packed values cannot carry from one field into the next
# below 2**64 examples/messages. Field 0 is unused (tokens travel apart, as a small int).
_F = 64
_FIELD = (1 << _F) - 1
_EXAMPLE, _SYSTEM, _DEVELOPER, _USER, _WITH_SYSTEM, _MULTI_TURN, _ASSISTANT = (
    1 << (_F * i) for i in range(1, 8)
)
# Per message, simple_chat adds a small int (7 bits per role, so at most 127 messages per example): wide
# ints cost an allocation per addition. The example's role mix is widened once, through a cache.
MAX_SIMPLE_MESSAGES = 127
ROLE_BITS = {"system": 1, "developer": 1 << 7, "user": 1 << 14, "assistant": 1 << 21}
WIDE_MIX: dict[int, tuple[int, int]] = {}
_WIDE_MAX = 4096


def widen_mix(mix: int) -> tuple[int, int]:
    """(packed counts, framing tokens) of an example with role mix ``mix`` (cached in ``WIDE_MIX``)."""
    s, d, u, a = mix & 127, (mix >> 7) & 127, (mix >> 14) & 127, mix >> 21
    framing = TOKENS_PER_EXAMPLE + TOKENS_PER_MESSAGE * (s + d + u + a)
    wide = _EXAMPLE + s * _SYSTEM + d * _DEVELOPER + u * _USER + a * _ASSISTANT
    if s or d:
        wide += _WITH_SYSTEM
    if a > 1:
        wide += _MULTI_TURN
    if len(WIDE_MIX) < _WIDE_MAX:
        WIDE_MIX[mix] = (wide, framing)
    return wide, framing


@dataclass(frozen=True)
class SimpleTotals:
    """Totals decoded from a sum of ``simple_chat`` packed counts."""

    examples: int
    system: int
    developer: int
    user: int
    assistant: int
    with_system: int
    multi_turn: int


def unpack_simple(total: int) -> SimpleTotals:
    """Decode one ``simple_chat`` packed count, or the sum of many, into its fields."""
    return SimpleTotals(
        examples=(total >> _F) & _FIELD,
        system=(total >> (2 * _F)) & _FIELD,
        developer=(total >> (3 * _F)) & _FIELD,
        user=(total >> (4 * _F)) & _FIELD,
        with_system=(total >> (5 * _F)) & _FIELD,
        multi_turn=(total >> (6 * _F)) & _FIELD,
        assistant=total >> (7 * _F),
    )


def simple_chat(obj: object) -> tuple[int, int] | None:
    """Accept the common shape in one tight loop: ``{"messages": [...]}`` whose messages are all
    ``{"role": system|developer|user|assistant, "content": non-blank str}``, with an assistant message last.

    Returns (the example's counts packed into one int, decoded with ``unpack_simple``; its estimated
    tokens with framing), or None when the example needs the general path (anything else, including every invalid example). Whatever it accepts is valid under
    chat.schema.json and raises no warning except the token limit.
    """
    mix = tokens = 0
    role = None
    bits = ROLE_BITS
    # Exceptions stand in for type checks on this hot path: obj["messages"] fails on a non-dict (TypeError)
    # or a dict without it (KeyError), m["content"] on a non-dict message, .strip() on a non-string
    # content (AttributeError); the role lookup rejects any other role (KeyError) or an unhashable one
    # (TypeError). An empty list leaves role None and is rejected below.
    try:
        msgs = obj["messages"]  # type: ignore[index]
        if len(obj) != 1 or type(msgs) is not list or len(msgs) > MAX_SIMPLE_MESSAGES:  # type: ignore[arg-type]
            return None
        for m in msgs:
            if len(m) != 2:
                return None
            content = m["content"]
            # str.strip() drops exactly the characters str.isspace() (and the schema's \S) treat as
            # space, and returns the string itself when there are none: one call rejects "" and blanks.
            if not content.strip():
                return None
            role = m["role"]
            mix += bits[role]
            tokens += (len(content) + 3) >> 2  # ceil(chars / 4), see validation.tokens
    except (KeyError, TypeError, AttributeError):
        return None
    if role != "assistant":
        return None
    known = WIDE_MIX.get(mix)
    wide, framing = widen_mix(mix) if known is None else known
    return wide, framing + tokens
