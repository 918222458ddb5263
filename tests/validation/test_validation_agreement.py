"""The schema files are the source of truth: the fast path must agree with them line by line."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from vpaths import BAD, SAMPLE_FILES, WARN

from schemas import SCHEMA_KINDS, load_schema
from validation.fastpath import chat_errors, preference_errors, simple_chat
from validation.schema_errors import schema_issues, validator_for

FAST = {"chat": chat_errors, "preference": preference_errors}


def _parsed_lines(path: Path) -> Iterator[Any]:
    with path.open("rb") as f:
        for raw in f:
            try:
                yield orjson.loads(raw.removeprefix(b"\xef\xbb\xbf"))
            except orjson.JSONDecodeError:
                continue


def _kind_of(path: Path) -> str:
    return "preference" if "pref" in path.name or "preference" in str(path) else "chat"


def _corpus_files() -> list[Path]:
    files = [p for folder in (BAD, WARN) for p in sorted(folder.glob("*.jsonl"))]
    return [*files, *SAMPLE_FILES]


def _assert_agree(obj: Any, kind: str) -> None:
    fast = FAST[kind](obj)
    schema_ok = validator_for(kind).is_valid(obj)  # type: ignore[arg-type]
    assert (not fast) == schema_ok, (kind, obj, fast)
    if fast:
        # The reported schema fields must be among those the fast path flagged (same rules, same places).
        fields = {field for field, _ in schema_issues(obj, kind)}  # type: ignore[arg-type]
        assert fields and fields <= set(fast), (obj, fields, fast)
    if kind == "chat" and simple_chat(obj) is not None:
        assert schema_ok, obj


def test_schemas_share_their_message_definitions() -> None:
    chat, pref = load_schema("chat"), load_schema("preference")
    shared = set(chat["$defs"])
    assert shared <= set(pref["$defs"])
    assert {k: pref["$defs"][k] for k in shared} == chat["$defs"]
    assert load_schema("chat") is chat  # cached
    with pytest.raises(ValueError):
        load_schema("csv")  # type: ignore[arg-type]


@pytest.mark.parametrize("path", _corpus_files(), ids=lambda p: p.name)
def test_fast_path_agrees_with_schema_on_corpus(path: Path) -> None:
    lines = list(_parsed_lines(path))
    for obj in lines:
        for kind in SCHEMA_KINDS:  # both kinds: a chat line must also be judged invalid as preference
            _assert_agree(obj, kind)


# Values that exercise type, enum, const, length and whitespace rules.
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    2,
    1.0,
    0.5,
    -1,
    "",
    " ",
    "\n\t",
    "x",
    "assistant",
    "user",
    "tool",
    "function",
    "bot",
    [],
    [1],
    {},
    {"a": 1},
    '{"a": 1}',
]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _mutate(obj: Any, rng: random.Random) -> Any:
    obj = copy.deepcopy(obj)
    paths = [p for p in _paths(obj) if p]
    if not paths:
        return obj
    path = rng.choice(paths)
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    key = path[-1]
    action = rng.random()
    if action < 0.45:
        parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))
    elif action < 0.65 and isinstance(parent, dict):
        del parent[key]
    elif action < 0.8 and isinstance(parent, dict):
        parent[rng.choice(["weight", "tool_calls", "tool_call_id", "name", "content", "role", "extra"])] = (
            copy.deepcopy(rng.choice(ODD_VALUES))
        )
    elif isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]) if rng.random() < 0.5 else rng.choice(ODD_VALUES))
    else:
        parent[key] = [] if rng.random() < 0.5 else {}
    return obj


SEEDS: list[Any] = [
    {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "weight": 1},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "q", "name": "n"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c", "content": "r"},
            {"role": "assistant", "content": "a"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}, "strict": True}}],
        "parallel_tool_calls": False,
    },
    {
        "input": {
            "messages": [{"role": "developer", "content": "d"}, {"role": "user", "content": "q"}],
            "tools": [],
        },
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad", "weight": 0}],
    },
]


def test_fast_path_agrees_with_schema_on_random_mutations() -> None:
    rng = random.Random(1234)
    for seed in SEEDS:
        for kind in SCHEMA_KINDS:
            _assert_agree(seed, kind)
    for _ in range(3000):
        obj = rng.choice(SEEDS)
        for _ in range(rng.randint(1, 3)):
            obj = _mutate(obj, rng)
        for kind in SCHEMA_KINDS:
            _assert_agree(obj, kind)
    json.dumps(SEEDS)  # the seeds are plain JSON
