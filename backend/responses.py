"""Responses on the wire: the create body, the Response object, its input items and its stream events.

Shapes follow MKA1's SDK schema (``meetkai_mka1.models.ResponseObject`` and the ``response.*`` streaming
events), which the openai SDK also reads. No I/O here: routes_responses.py generates, stores and sends.
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from contract import wire

TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})
ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]


def _unsupported(field: str, why: str) -> PydanticCustomError:
    return PydanticCustomError(
        "unsupported",
        "{field} is not supported by the embedded backend: {why}",
        {
            "field": field,
            "why": why,
        },
    )


class InputMessage(BaseModel):
    """A message item of ``input``; content is a string or text parts."""

    # Items echoed from an earlier response carry id/status: accepted and ignored.
    model_config = ConfigDict(extra="ignore")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[dict[str, Any]]

    @field_validator("content")
    @classmethod
    def _text_only(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(value, list):
            for part in value:
                kind = part.get("type")
                if kind not in TEXT_PART_TYPES:
                    raise _unsupported(f"content part type '{kind}'", "only text parts (input_text) are read")
        return value

    def text(self) -> str:
        """Plain text of the content (text parts joined)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content)


def _as_messages(value: Any) -> Any:
    # A string input is one user message; one branch keeps validation errors about the messages precise.
    return [{"role": "user", "content": value}] if isinstance(value, str) else value


class ResponseCreate(BaseModel):
    """POST /responses body. Unknown fields are a 400; fields of MKA1's schema that this backend does not
    implement are accepted only at their neutral value (``tools: []``, ``background: false``, ...)."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, max_length=1024)]
    input: Annotated[list[InputMessage], BeforeValidator(_as_messages)]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=wire.MAX_OUTPUT_TOKENS_CAP)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    metadata: dict[str, str] | None = None
    previous_response_id: str | None = None
    store: bool | None = None  # None: true
    stream: bool | None = None  # None: false
    stream_options: dict[str, bool] | None = None
    seed: int | None = None  # extension: reproducible sampling
    truncation: Literal["auto", "disabled"] | None = None  # None: auto
    # Echoed identifiers; they change nothing here.
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    # No tools ever run, so these are accepted and echoed.
    parallel_tool_calls: bool | None = None
    max_tool_calls: Annotated[int, Field(ge=1)] | None = None
    # Accepted at their neutral value only.
    background: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    include: list[str] | None = None
    reasoning: dict[str, Any] | None = None
    service_tier: str | None = None
    modalities: list[str] | None = None
    top_logprobs: int | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        problem = wire.metadata_problem(value)
        if problem is not None:
            raise PydanticCustomError("metadata", problem)
        return value

    @field_validator("stream_options")
    @classmethod
    def _stream_options(cls, value: dict[str, bool] | None) -> dict[str, bool] | None:
        # Obfuscation pads deltas against length side channels; leaving it out changes no text.
        for key in value or {}:
            if key != "include_obfuscation":
                raise _unsupported(f"stream_options.{key}", "only include_obfuscation is accepted")
        return value

    @field_validator("background")
    @classmethod
    def _foreground(cls, value: bool | None) -> bool | None:
        if value:
            raise _unsupported("background", "every response is generated while the request waits")
        return value

    @field_validator("tools", "include")
    @classmethod
    def _empty(cls, value: list[Any] | None, info: Any) -> list[Any] | None:
        if value:
            raise _unsupported(info.field_name, "the local models have no tools and no extra output")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _no_tool_choice(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if value not in (None, "auto", "none"):
            raise _unsupported("tool_choice", "only 'auto' and 'none' (there are no tools)")
        return value

    @field_validator("text")
    @classmethod
    def _plain_text(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        fmt = (value or {}).get("format") or {"type": "text"}
        if not isinstance(fmt, dict) or fmt.get("type") != "text":
            raise _unsupported("text.format", "only plain text output ({'type': 'text'})")
        return value

    @field_validator("reasoning")
    @classmethod
    def _no_reasoning(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value:
            raise _unsupported("reasoning", "the local models are not reasoning models")
        return value

    @field_validator("service_tier")
    @classmethod
    def _one_tier(cls, value: str | None) -> str | None:
        if value not in (None, "auto", "default"):
            raise _unsupported("service_tier", "only 'auto' and 'default'")
        return value

    @field_validator("modalities")
    @classmethod
    def _text_out(cls, value: list[str] | None) -> list[str] | None:
        if value not in (None, [], ["text"]):
            raise _unsupported("modalities", "only ['text']")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise _unsupported("top_logprobs", "log probabilities are not returned")
        return value


def new_item_id() -> str:
    """``msg_`` + 32 hex digits."""
    return "msg_" + secrets.token_hex(16)


def input_items(body: ResponseCreate) -> list[dict[str, Any]]:
    """This request's ``input`` as stored message items (what ``GET .../input_items`` lists)."""
    return [
        {
            "id": new_item_id(),
            "type": "message",
            "role": m.role,
            "status": "completed",
            "content": [{"type": "output_text" if m.role == "assistant" else "input_text", "text": m.text()}],
        }
        for m in body.input
    ]


def chat_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored input items as chat messages for the generator ("developer" is the newer "system")."""
    return [
        {
            "role": "system" if item["role"] == "developer" else item["role"],
            "content": "".join(part["text"] for part in item["content"]),
        }
        for item in items
    ]


def output_message(item_id: str, text: str, status: ResponseStatus) -> dict[str, Any]:
    """The assistant message item; its status follows the response's."""
    content = [] if status == "in_progress" and not text else [_text_part(text)]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def response_object(
    body: ResponseCreate,
    *,
    response_id: str,
    created_at: int,
    status: ResponseStatus,
    output: list[dict[str, Any]],
    usage: tuple[int, int] = (0, 0),
    completed_at: int | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The full Response object (every field MKA1's schema requires, nullable ones as null)."""
    input_tokens, output_tokens = usage
    text = "".join(
        part["text"] for item in output for part in item["content"] if part["type"] == "output_text"
    )
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": completed_at,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "background": False,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "max_tool_calls": body.max_tool_calls,
        "metadata": body.metadata or {},
        "model": body.model,
        "output": output,
        "output_text": text,
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "store": body.store is not False,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.tool_choice if isinstance(body.tool_choice, str) else "auto",
        "tools": [],
        "truncation": body.truncation or "auto",
        "service_tier": "default",
        "user": body.user,
        "safety_identifier": body.safety_identifier,
        "prompt_cache_key": body.prompt_cache_key,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }


class StreamEvents:
    """Builds the ``response.*`` Server-Sent Events of one response, numbering them in order."""

    def __init__(self, item_id: str) -> None:
        self.item_id = item_id
        self._seq = 0

    def _event(self, type_: str, **fields: Any) -> str:
        data = {"type": type_, "sequence_number": self._seq, **fields}
        self._seq += 1
        return f"event: {type_}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "output_index": 0, "content_index": 0}

    def opening(self, snapshot: dict[str, Any]) -> list[str]:
        """created, in_progress, output_item.added and content_part.added, before any text."""
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
            self._event(
                "response.output_item.added",
                output_index=0,
                item=output_message(self.item_id, "", "in_progress"),
            ),
            self._event("response.content_part.added", **self._where(), part=_text_part("")),
        ]

    def delta(self, piece: str) -> str:
        """One ``response.output_text.delta``."""
        return self._event("response.output_text.delta", **self._where(), delta=piece, logprobs=[])

    def closing(self, final: dict[str, Any]) -> list[str]:
        """text done, part done, item done, then ``response.completed`` or ``response.incomplete``."""
        item = final["output"][0]
        text = final["output_text"]
        return [
            self._event("response.output_text.done", **self._where(), text=text, logprobs=[]),
            self._event("response.content_part.done", **self._where(), part=_text_part(text)),
            self._event("response.output_item.done", output_index=0, item=item),
            self._event(
                "response.incomplete" if final["status"] == "incomplete" else "response.completed",
                response=final,
            ),
        ]

    def failed(self, final: dict[str, Any]) -> str:
        """``response.failed`` carrying the response with its error."""
        return self._event("response.failed", response=final)
