"""Per-example statistics and semantic warnings for examples that already passed the structural checks."""

from __future__ import annotations

from typing import Any

import orjson

from validation.results import DatasetStats
from validation.tokens import CHARS_PER_TOKEN, TOKENS_PER_EXAMPLE, TOKENS_PER_MESSAGE, message_tokens

Warning = tuple[str, str]
_NO_WARNINGS: list[Warning] = []


class StatsAccumulator:
    """Running totals over valid examples (O(1) memory apart from the role table)."""

    def __init__(self, token_limit: int) -> None:
        self.token_limit = token_limit
        self.examples = 0
        self.messages = 0
        self.total_tokens = 0
        self.min_tokens = 0
        self.max_tokens = 0
        self.over_limit = 0
        self.billable = 0
        self.role_counts: dict[str, int] = {}
        self.with_system = 0
        self.with_tool_calls = 0
        self.multi_turn = 0
        self.with_weight_zero = 0

    def add_tokens(self, tokens: int) -> bool:
        """Count one example of ``tokens``; True when it exceeds the limit."""
        if self.examples == 0 or tokens < self.min_tokens:
            self.min_tokens = tokens
        if tokens > self.max_tokens:
            self.max_tokens = tokens
        self.examples += 1
        self.total_tokens += tokens
        if tokens > self.token_limit:
            self.over_limit += 1
            self.billable += self.token_limit
            return True
        self.billable += tokens
        return False

    def merge_fast(
        self,
        *,
        examples: int,
        tokens: int,
        min_tokens: int,
        max_tokens: int,
        roles: dict[str, int],
        with_system: int,
        multi_turn: int,
    ) -> None:
        """Fold in totals the validator's fast lane kept in locals (all within the token limit)."""
        if not examples:
            return
        if self.examples == 0 or min_tokens < self.min_tokens:
            self.min_tokens = min_tokens
        self.max_tokens = max(self.max_tokens, max_tokens)
        self.examples += examples
        self.total_tokens += tokens
        self.billable += tokens
        self.messages += sum(roles.values())
        for role, n in roles.items():
            if n:
                self.role_counts[role] = self.role_counts.get(role, 0) + n
        self.with_system += with_system
        self.multi_turn += multi_turn

    def freeze(self, *, lines: int, nbytes: int, n_epochs: int) -> DatasetStats:
        """The final immutable statistics."""
        return DatasetStats(
            lines=lines,
            bytes=nbytes,
            examples=self.examples,
            messages=self.messages,
            min_tokens=self.min_tokens,
            mean_tokens=round(self.total_tokens / self.examples, 2) if self.examples else 0.0,
            max_tokens=self.max_tokens,
            total_tokens=self.total_tokens,
            token_limit=self.token_limit,
            examples_over_limit=self.over_limit,
            billable_tokens_per_epoch=self.billable,
            n_epochs=n_epochs,
            estimated_billed_tokens=self.billable * n_epochs,
            role_counts=dict(sorted(self.role_counts.items())),
            examples_with_system=self.with_system,
            examples_with_tool_calls=self.with_tool_calls,
            multi_turn_examples=self.multi_turn,
            examples_with_weight_zero=self.with_weight_zero,
        )


def _scan(
    messages: list[dict[str, Any]], prefix: str, acc: StatsAccumulator, warnings: list[Warning] | None
) -> tuple[int, int, bool, bool, bool, list[Warning] | None]:
    """Walk messages once: (tokens, assistant count, has system, has tool calls, weight 0, warnings)."""
    roles = acc.role_counts
    tokens = 0
    assistants = 0
    has_system = has_calls = weight_zero = False
    call_ids: set[str] | None = None
    for i, m in enumerate(messages):
        role = m["role"]
        roles[role] = roles.get(role, 0) + 1
        if len(m) == 2 and "content" in m:  # role + content: the common case, counted inline for speed
            tokens += TOKENS_PER_MESSAGE - (-len(m["content"]) // CHARS_PER_TOKEN)
            if role == "assistant":
                assistants += 1
            elif role == "system" or role == "developer":
                has_system = True
            continue
        tokens += message_tokens(m)
        if role == "assistant":
            assistants += 1
            if m.get("weight") == 0:
                weight_zero = True
            calls = m.get("tool_calls")
            if calls:
                has_calls = True
                call_ids = call_ids or set()
                for j, call in enumerate(calls):
                    call_ids.add(call["id"])
                    try:
                        orjson.loads(call["function"]["arguments"])
                    except orjson.JSONDecodeError:
                        warnings = warnings or []
                        warnings.append(
                            (f"{prefix}.{i}.tool_calls.{j}.function.arguments", "arguments is not valid JSON")
                        )
        elif role == "system" or role == "developer":
            has_system = True
        elif role == "tool" and (call_ids is None or m["tool_call_id"] not in call_ids):
            warnings = warnings or []
            warnings.append(
                (
                    f"{prefix}.{i}.tool_call_id",
                    f"tool_call_id {m['tool_call_id'][:40]!r} matches no earlier tool call",
                )
            )
    return tokens, assistants, has_system, has_calls, weight_zero, warnings


def analyze_chat(obj: dict[str, Any], acc: StatsAccumulator) -> list[Warning]:
    """Update ``acc`` with a valid chat example and return its warnings as (field, message)."""
    messages = obj["messages"]
    tokens, assistants, has_system, has_calls, weight_zero, warnings = _scan(messages, "messages", acc, None)
    tokens += TOKENS_PER_EXAMPLE
    acc.messages += len(messages)
    acc.with_system += has_system
    acc.with_tool_calls += has_calls
    acc.multi_turn += assistants > 1
    acc.with_weight_zero += weight_zero
    last = messages[-1]
    if last["role"] != "assistant":
        warnings = warnings or []
        warnings.append(
            (
                f"messages.{len(messages) - 1}.role",
                f"last message is from {last['role']}, not assistant; it will not be trained on",
            )
        )
    elif ("weight" in last or weight_zero) and all(
        m.get("weight", 1) == 0 for m in messages if m["role"] == "assistant"
    ):
        warnings = warnings or []
        warnings.append(("messages", "every assistant message has weight 0; nothing to train on"))
    if acc.add_tokens(tokens):
        warnings = warnings or []
        warnings.append(
            ("$", f"about {tokens} tokens, over the {acc.token_limit}-token limit; it will be truncated")
        )
    return warnings or _NO_WARNINGS


def analyze_preference(obj: dict[str, Any], acc: StatsAccumulator) -> list[Warning]:
    """Update ``acc`` with a valid preference example and return its warnings as (field, message)."""
    inp = obj["input"]["messages"]
    tokens, _, has_system, has_calls, _, warnings = _scan(inp, "input.messages", acc, None)
    out_tokens = 0
    for key in ("preferred_output", "non_preferred_output"):
        t, _, _, calls, _, warnings = _scan(obj[key], key, acc, warnings)
        has_calls = has_calls or calls
        out_tokens = max(out_tokens, t)
    # A DPO pair is processed as input + each output; the longer pair decides truncation.
    tokens += out_tokens + TOKENS_PER_EXAMPLE
    acc.messages += len(inp) + 2
    acc.with_system += has_system
    acc.with_tool_calls += has_calls
    if obj["preferred_output"][0] == obj["non_preferred_output"][0]:
        warnings = warnings or []
        warnings.append(("non_preferred_output.0", "preferred and non-preferred outputs are identical"))
    if acc.add_tokens(tokens):
        warnings = warnings or []
        warnings.append(
            ("$", f"about {tokens} tokens, over the {acc.token_limit}-token limit; it will be truncated")
        )
    return warnings or _NO_WARNINGS
