"""Write the bad-file corpus (tests/data/bad/) and the warning-only corpus (tests/data/warn/).

    python tests/data/bad/make_corpus.py

Each bad file holds >= 10 good examples and exactly one problem, at line 5 unless the problem is
file-level (line 0) or about line 1; EXPECTED.json says where it is (line, field path, message substring,
and validator options when the case needs any). The outputs are small and committed; re-run this script
after changing a case.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

BAD = Path(__file__).resolve().parent
WARN = BAD.parent / "warn"
BAD_AT = 5  # 1-based line that carries the problem


def good_chat(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"Where is my order A-{10000 + i}?"},
            {"role": "assistant", "content": f"Hi there! Order A-{10000 + i} ships tomorrow."},
        ]
    }


def good_pref(i: int) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": f"How do I return item {i}?"}]},
        "preferred_output": [{"role": "assistant", "content": f"Hi there! Start return {i} under Orders."}],
        "non_preferred_output": [{"role": "assistant", "content": "Read the FAQ."}],
    }


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def lines_with(bad: bytes, *, pref: bool = False, n: int = 12, at: int = BAD_AT) -> bytes:
    """``n`` good lines with line ``at`` replaced by ``bad``."""
    make = good_pref if pref else good_chat
    out = [dumps(make(i)) for i in range(1, n + 1)]
    out[at - 1] = bad
    return b"\n".join(out) + b"\n"


def chat(*messages: dict[str, Any], **top: Any) -> bytes:
    return dumps({"messages": list(messages), **top})


U = {"role": "user", "content": "Where is my parcel?"}
A = {"role": "assistant", "content": "Hi there! It arrives Friday."}
CALL = {"id": "call_1", "type": "function", "function": {"name": "track", "arguments": '{"order": "A-1"}'}}
TOOL = {"role": "tool", "tool_call_id": "call_1", "content": '{"eta": "Friday"}'}


def with_call(call: Any, **extra: Any) -> bytes:
    return chat(U, {"role": "assistant", "content": None, "tool_calls": call, **extra}, TOOL, A)


def pref(**over: Any) -> bytes:
    base = good_pref(99)
    base.update(over)
    return dumps({k: v for k, v in base.items() if v is not None})


Case = tuple[bytes, int, str, str, dict[str, Any]]
# name -> (file bytes, line, field, message substring, validate_file options)
BAD_CASES: dict[str, Case] = {
    "invalid_json.jsonl": (
        lines_with(b'{"messages": [{"role": "user", "content": "hi"}'),
        5,
        "$",
        "invalid JSON",
        {},
    ),
    "trailing_garbage.jsonl": (lines_with(chat(U, A) + b' {"x": 1}'), 5, "$", "trailing data", {}),
    "wrong_top_level_type.jsonl": (lines_with(dumps([U, A])), 5, "$", "must be a JSON object", {}),
    "missing_messages.jsonl": (
        lines_with(dumps({"tools": []})),
        5,
        "messages",
        "required key 'messages'",
        {},
    ),
    "empty_messages.jsonl": (lines_with(chat()), 5, "messages", "non-empty list", {}),
    "messages_not_list.jsonl": (
        lines_with(dumps({"messages": "hello"})),
        5,
        "messages",
        "must be an array",
        {},
    ),
    "unknown_role.jsonl": (
        lines_with(chat({"role": "customer", "content": "hi"}, A)),
        5,
        "messages.0.role",
        "unknown role 'customer'",
        {},
    ),
    "role_not_string.jsonl": (
        lines_with(chat({"role": ["user"], "content": "hi"}, A)),
        5,
        "messages.0.role",
        "unknown role",
        {},
    ),
    "missing_role.jsonl": (
        lines_with(chat({"content": "hi"}, A)),
        5,
        "messages.0.role",
        "required key 'role'",
        {},
    ),
    "no_assistant.jsonl": (
        lines_with(chat(U, {"role": "user", "content": "Hello?"})),
        5,
        "messages",
        "no assistant message",
        {},
    ),
    "message_not_object.jsonl": (lines_with(chat("hello", A)), 5, "messages.0", "must be an object", {}),
    "empty_content.jsonl": (
        lines_with(chat({"role": "user", "content": ""}, A)),
        5,
        "messages.0.content",
        "empty",
        {},
    ),
    "whitespace_content.jsonl": (
        lines_with(chat(U, {"role": "assistant", "content": "  \n "})),
        5,
        "messages.1.content",
        "only whitespace",
        {},
    ),
    "non_string_content.jsonl": (
        lines_with(chat({"role": "user", "content": 42}, A)),
        5,
        "messages.0.content",
        "must be a string, got integer",
        {},
    ),
    "content_parts_list.jsonl": (
        lines_with(chat({"role": "user", "content": [{"type": "text", "text": "hi"}]}, A)),
        5,
        "messages.0.content",
        "must be a string, got array",
        {},
    ),
    "null_content_user.jsonl": (
        lines_with(chat({"role": "user", "content": None}, A)),
        5,
        "messages.0.content",
        "must be a string, got null",
        {},
    ),
    "missing_content.jsonl": (
        lines_with(chat({"role": "user"}, A)),
        5,
        "messages.0.content",
        "needs a 'content'",
        {},
    ),
    "assistant_without_content.jsonl": (
        lines_with(chat(U, {"role": "assistant"})),
        5,
        "messages.1.content",
        "needs 'content' (or 'tool_calls')",
        {},
    ),
    "bad_weight.jsonl": (
        lines_with(chat(U, {**A, "weight": 2})),
        5,
        "messages.1.weight",
        "weight must be 0 or 1",
        {},
    ),
    "bool_weight.jsonl": (
        lines_with(chat(U, {**A, "weight": True})),
        5,
        "messages.1.weight",
        "must be 0 or 1",
        {},
    ),
    "weight_on_user.jsonl": (
        lines_with(chat({**U, "weight": 1}, A)),
        5,
        "messages.0.weight",
        "only allowed on assistant",
        {},
    ),
    "malformed_tool_calls.jsonl": (
        lines_with(with_call([{"id": "call_1", "type": "function", "function": {"name": "track"}}])),
        5,
        "messages.1.tool_calls.0.function.arguments",
        "required key 'arguments'",
        {},
    ),
    "tool_calls_not_list.jsonl": (
        lines_with(with_call(CALL)),
        5,
        "messages.1.tool_calls",
        "must be an array",
        {},
    ),
    "empty_tool_calls.jsonl": (lines_with(with_call([])), 5, "messages.1.tool_calls", "non-empty list", {}),
    "tool_call_bad_type.jsonl": (
        lines_with(with_call([{**CALL, "type": "func"}])),
        5,
        "messages.1.tool_calls.0.type",
        "must be 'function'",
        {},
    ),
    "tool_call_arguments_object.jsonl": (
        lines_with(with_call([{**CALL, "function": {"name": "track", "arguments": {"order": 1}}}])),
        5,
        "messages.1.tool_calls.0.function.arguments",
        "must be a string",
        {},
    ),
    "tool_calls_on_user.jsonl": (
        lines_with(chat({**U, "tool_calls": [CALL]}, A)),
        5,
        "messages.0.tool_calls",
        "only allowed on assistant",
        {},
    ),
    "tool_missing_tool_call_id.jsonl": (
        lines_with(
            chat(U, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "content": "Friday"}, A)
        ),
        5,
        "messages.2.tool_call_id",
        "needs 'tool_call_id'",
        {},
    ),
    "tool_call_id_on_user.jsonl": (
        lines_with(chat({**U, "tool_call_id": "call_1"}, A)),
        5,
        "messages.0.tool_call_id",
        "only allowed on tool",
        {},
    ),
    "unknown_message_key.jsonl": (
        lines_with(chat({**U, "timestamp": 1700000000}, A)),
        5,
        "messages.0.timestamp",
        "unrecognised key 'timestamp'",
        {},
    ),
    "unknown_top_level_key.jsonl": (
        lines_with(chat(U, A, meta={"id": 1})),
        5,
        "meta",
        "unrecognised key 'meta'",
        {},
    ),
    "bad_parallel_tool_calls.jsonl": (
        lines_with(chat(U, A, parallel_tool_calls="yes")),
        5,
        "parallel_tool_calls",
        "must be a boolean",
        {},
    ),
    "bad_tools.jsonl": (
        lines_with(chat(U, A, tools=[{"type": "function", "function": {}}])),
        5,
        "tools.0.function.name",
        "required key 'name'",
        {},
    ),
    "name_not_string.jsonl": (
        lines_with(chat({**U, "name": 7}, A)),
        5,
        "messages.0.name",
        "must be a string",
        {},
    ),
    "non_utf8.jsonl": (
        lines_with(chat(U, A).replace(b"Friday", b"Fr\xffday")),
        5,
        "$",
        "invalid UTF-8 at byte",
        {},
    ),
    "utf8_bom.jsonl": (b"\xef\xbb\xbf" + lines_with(dumps(good_chat(5))), 1, "$", "byte order mark", {}),
    "blank_lines.jsonl": (lines_with(b""), 5, "$", "blank line", {}),
    "whitespace_line.jsonl": (lines_with(b"   \t "), 5, "$", "blank line", {}),
    "line_too_long.jsonl": (
        lines_with(chat(U, {"role": "assistant", "content": "x" * 3000})),
        5,
        "$",
        "longer than 2000 bytes",
        {"max_line_bytes": 2000},
    ),
    "empty_file.jsonl": (b"", 0, "$", "file is empty", {}),
    "too_few_examples.jsonl": (
        b"\n".join(dumps(good_chat(i)) for i in range(3)) + b"\n",
        0,
        "$",
        "only 3 examples; at least 10",
        {},
    ),
    "really_csv.jsonl": (
        b"prompt,completion\n" + b"".join(b"where is order %d?,it ships soon\n" % i for i in range(12)),
        0,
        "$",
        "CSV",
        {},
    ),
    "gzip.jsonl.gz": (
        gzip.compress(lines_with(dumps(good_chat(5))), mtime=0),
        0,
        "$",
        "gzip file; upload the uncompressed JSONL",
        {},
    ),
    "zip_archive.jsonl": (b"PK\x03\x04" + b"\x00" * 40, 0, "$", "zip archive", {}),
    "utf16.jsonl": (lines_with(dumps(good_chat(5))).decode().encode("utf-16"), 0, "$", "UTF-16", {}),
    "json_array.jsonl": (dumps([good_chat(i) for i in range(12)]) + b"\n", 0, "$", "one JSON array", {}),
    "pretty_printed.jsonl": (
        json.dumps(good_chat(1), indent=2).encode() + b"\n",
        0,
        "$",
        "pretty-printed",
        {},
    ),
    # Preference format (detected from line 1, which is valid).
    "pref_missing_preferred_output.jsonl": (
        lines_with(pref(preferred_output=None), pref=True),
        5,
        "preferred_output",
        "required key 'preferred_output'",
        {},
    ),
    "pref_non_preferred_not_assistant.jsonl": (
        lines_with(pref(non_preferred_output=[U]), pref=True),
        5,
        "non_preferred_output.0.role",
        "must be 'assistant'",
        {},
    ),
    "pref_input_without_messages.jsonl": (
        lines_with(pref(input={}), pref=True),
        5,
        "input.messages",
        "required key 'messages'",
        {},
    ),
    "pref_input_not_object.jsonl": (
        lines_with(pref(input=[U]), pref=True),
        5,
        "input",
        "must be an object",
        {},
    ),
    "pref_two_preferred.jsonl": (
        lines_with(pref(preferred_output=[A, A]), pref=True),
        5,
        "preferred_output",
        "exactly one assistant message, got 2",
        {},
    ),
    "pref_empty_preferred.jsonl": (
        lines_with(pref(preferred_output=[]), pref=True),
        5,
        "preferred_output",
        "exactly one assistant message, got 0",
        {},
    ),
    "pref_output_not_list.jsonl": (
        lines_with(pref(preferred_output=A), pref=True),
        5,
        "preferred_output",
        "must be an array",
        {},
    ),
    "pref_unknown_key.jsonl": (
        lines_with(dumps({**good_pref(99), "score": 0.9}), pref=True),
        5,
        "score",
        "unrecognised key 'score'",
        {},
    ),
    "pref_weight_on_input_user.jsonl": (
        lines_with(pref(input={"messages": [{**U, "weight": 0}]}), pref=True),
        5,
        "input.messages.0.weight",
        "only allowed on assistant",
        {},
    ),
    "chat_file_as_preference.jsonl": (
        lines_with(dumps(good_chat(5))),
        0,
        "$",
        "line 1 is in chat format",
        {"kind": "preference"},
    ),
}


def _chat_tool(call_id: str, arguments: str = '{"order": "A-1"}') -> bytes:
    call = {**CALL, "id": call_id, "function": {"name": "track", "arguments": arguments}}
    return chat(U, {"role": "assistant", "tool_calls": [call]}, TOOL, A)


# name -> (file bytes, line, field, message substring, options); validate_file must be ok with this warning.
WARN_CASES: dict[str, Case] = {
    "duplicates.jsonl": (lines_with(dumps(good_chat(2)), at=7), 7, "$", "duplicate of line 2", {}),
    "crlf.jsonl": (lines_with(dumps(good_chat(5))).replace(b"\n", b"\r\n"), 1, "$", "CRLF", {}),
    "last_not_assistant.jsonl": (
        lines_with(chat(U, A, {"role": "user", "content": "Thanks!"})),
        5,
        "messages.2.role",
        "last message is from user",
        {},
    ),
    "unmatched_tool_call_id.jsonl": (
        lines_with(_chat_tool("call_9")),
        5,
        "messages.2.tool_call_id",
        "matches no earlier tool call",
        {},
    ),
    "tool_arguments_not_json.jsonl": (
        lines_with(_chat_tool("call_1", "{order: A-1")),
        5,
        "messages.1.tool_calls.0.function.arguments",
        "not valid JSON",
        {},
    ),
    "all_weight_zero.jsonl": (
        lines_with(chat(U, {**A, "weight": 0})),
        5,
        "messages",
        "nothing to train on",
        {},
    ),
    "over_token_limit.jsonl": (
        lines_with(chat(U, {"role": "assistant", "content": "word " * 400})),
        5,
        "$",
        "over the 100-token limit",
        {"token_limit": 100},
    ),
    "identical_preference_outputs.jsonl": (
        lines_with(pref(non_preferred_output=[A], preferred_output=[A]), pref=True),
        5,
        "non_preferred_output.0",
        "identical",
        {},
    ),
}
# Train/validation overlap: lines 3 and 8 of the train file reappear as lines 2 and 6 of the validation file.
OVERLAP_TRAIN = lines_with(dumps(good_chat(3)), at=3)
OVERLAP_VALID = (
    b"\n".join(
        dumps(good_chat(i if i not in (2, 6) else {2: 3, 6: 8}[i]) if i in (2, 6) else good_chat(100 + i))
        for i in range(1, 13)
    )
    + b"\n"
)


def main() -> None:
    for folder, cases in ((BAD, BAD_CASES), (WARN, WARN_CASES)):
        folder.mkdir(exist_ok=True)
        expected = {}
        for name, (data, line, field, message, options) in cases.items():
            (folder / name).write_bytes(data)
            expected[name] = {"line": line, "field": field, "message": message, "options": options}
        if folder is WARN:
            (folder / "overlap_train.jsonl").write_bytes(OVERLAP_TRAIN)
            (folder / "overlap_validation.jsonl").write_bytes(OVERLAP_VALID)
            expected["overlap_validation.jsonl"] = {
                "train": "overlap_train.jsonl",
                "line": 0,
                "field": "$",
                "message": "2 examples also appear in the training file: train 3 = validation 2, "
                "train 8 = validation 6",
                "options": {},
            }
        (folder / "EXPECTED.json").write_text(json.dumps(expected, indent=2) + "\n")


if __name__ == "__main__":
    main()
