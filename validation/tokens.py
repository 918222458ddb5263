"""Fast, dependency-free token estimate for chat examples.

Heuristic (documented so billing estimates can be reproduced by hand):
* text costs ceil(chars / 4) tokens (English averages ~4 characters per BPE token);
* each message costs 4 extra tokens of framing (role and separators), as in OpenAI's cookbook counter;
* each example costs 3 extra tokens (the assistant reply primer);
* tool calls cost their function name and arguments as text plus 4 tokens each.
It over-counts code and under-counts CJK; it is meant for limits and cost estimates, not exact billing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_EXAMPLE = 3
TOKENS_PER_TOOL_CALL = 4


def text_tokens(text: str) -> int:
    """Estimated tokens of a piece of text: ceil(len / 4)."""
    return -(-len(text) // CHARS_PER_TOKEN)


def message_tokens(message: dict[str, Any]) -> int:
    """Estimated tokens of one (valid) message, framing included."""
    total = TOKENS_PER_MESSAGE
    content = message.get("content")
    if content:
        total += -(-len(content) // CHARS_PER_TOKEN)
    name = message.get("name")
    if name:
        total += -(-len(name) // CHARS_PER_TOKEN)
    calls = message.get("tool_calls")
    if calls:
        for call in calls:
            fn = call["function"]
            total += TOKENS_PER_TOOL_CALL + text_tokens(fn["name"]) + text_tokens(fn["arguments"])
    return total


def messages_tokens(messages: Iterable[dict[str, Any]]) -> int:
    """Estimated tokens of one example made of ``messages`` (the per-example primer included)."""
    return TOKENS_PER_EXAMPLE + sum(message_tokens(m) for m in messages)
