"""The chat fast lane decoded straight from line bytes into typed structs (msgspec, in C).

``simple_chat_line(raw)`` answers what ``simple_chat(orjson.loads(raw))`` answers, without building dicts:
msgspec decodes the line into ``_Example``/``_Message`` structs whose types *are* the common shape (only a
``messages`` key; messages with exactly ``role`` in system|developer|user|assistant and a string
``content``), so a line that decodes is that shape and only the checks a struct cannot express run in
Python (non-blank content, assistant last, the message cap, token estimate, role mix). On any decode or
type error it returns None and the caller takes the orjson path, which produces the exact error text.

msgspec is at least as strict as orjson on the JSON itself (invalid UTF-8, lone surrogates, control
characters, trailing data, BOM all fail in both) and, like orjson, keeps the last of duplicate keys, so a
line it accepts parses to the same values under orjson. tests/validation/test_validation_typedlane.py
checks that equivalence over the test corpus, seeded structural mutations and byte-level mutations.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from validation.fastpath import MAX_SIMPLE_MESSAGES, ROLE_BITS, WIDE_MIX, widen_mix


# gc=False: the structs hold only strings and a list of such structs, so they cannot form reference cycles;
# untracked objects keep the cyclic GC from scanning (and being triggered by) 100k examples' messages.
class _Message(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: Literal["system", "developer", "user", "assistant"]
    content: str


class _Example(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    messages: list[_Message]


_decode = msgspec.json.Decoder(_Example).decode
# msgspec.DecodeError (and its subclass ValidationError) and the UnicodeDecodeError msgspec lets through on
# invalid UTF-8 are all ValueErrors: one except clause declines every line msgspec does not accept.
_DECLINE = ValueError


def simple_chat_line(raw: bytes) -> tuple[int, int] | None:
    """``simple_chat`` of one JSONL line's bytes (a trailing newline is fine), or None to fall back.

    Never accepts a line that ``simple_chat(orjson.loads(raw))`` would not, and returns the same
    (packed counts, tokens) when it accepts one.
    """
    try:
        msgs = _decode(raw).messages
    except _DECLINE:
        return None
    if len(msgs) > MAX_SIMPLE_MESSAGES:
        return None
    mix = tokens = 0
    role = None
    bits = ROLE_BITS
    for m in msgs:
        content = m.content
        # str.strip() returns the string itself unless it has outer space; "" and all-space give "".
        if not content.strip():
            return None
        role = m.role
        mix += bits[role]
        tokens += (len(content) + 3) >> 2  # ceil(chars / 4), see validation.tokens
    if role != "assistant":  # also rejects an empty list (role stays None)
        return None
    known = WIDE_MIX.get(mix)
    wide, framing = widen_mix(mix) if known is None else known
    return wide, framing + tokens
