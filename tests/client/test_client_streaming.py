"""``responses.stream``: Server-Sent Events decoded as they arrive, the whole-answer fallback, errors and the
retry rule (only the opening of a ``store: false`` stream is repeated)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from client_testkit import FakeAPI, Runner, json_response

from client import ClientSettings, MKA1Client
from client._responses import SSEDecoder
from client.errors import APIConnectionError, BadRequestError, InternalServerError
from client.models import InputMessage, ResponseCreateRequest

REQUEST = ResponseCreateRequest(model="ft:local:abc", input=[InputMessage(role="user", content="Hi")])


def final(text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "status": status,
        "model": "ft:local:abc",
        "output": [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
        ],
    }


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def stream_response(body: bytes | Iterator[bytes]) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream; charset=utf-8"})


EVENTS = (
    {"type": "response.created", "sequence_number": 0, "response": {**final(""), "status": "in_progress"}},
    {"type": "response.output_text.delta", "sequence_number": 1, "delta": "Hel", "item_id": "msg_1"},
    {"type": "response.output_text.delta", "sequence_number": 2, "delta": "lo", "item_id": "msg_1"},
    {"type": "response.output_text.done", "sequence_number": 3, "text": "Hello"},
    {"type": "response.completed", "sequence_number": 4, "response": final("Hello")},
)


def test_events_arrive_decoded_in_order(runner: Runner, api: FakeAPI) -> None:
    api.routes[("POST", "responses")] = stream_response(sse(*EVENTS))
    events = runner.call(api, lambda c: c.responses.stream(REQUEST))
    assert [e.type for e in events] == [e["type"] for e in EVENTS]
    assert "".join(e.delta or "" for e in events) == "Hello"
    assert events[-1].response is not None and events[-1].response.output_text == "Hello"
    assert events[1].model_extra == {"item_id": "msg_1"}  # fields of other event types are kept
    body = json.loads(api.last.content)
    assert body["stream"] is True and body["model"] == "ft:local:abc"
    assert api.last.headers["accept"].startswith("text/event-stream")


def test_a_server_that_answers_whole_yields_one_final_event(runner: Runner, api: FakeAPI) -> None:
    api.routes[("POST", "responses")] = final("Whole", status="incomplete")
    (event,) = runner.call(api, lambda c: c.responses.stream(REQUEST))
    assert event.type == "response.incomplete"
    assert event.response is not None and event.response.output_text == "Whole"


def test_an_error_status_raises_before_any_event(runner: Runner, api: FakeAPI) -> None:
    api.routes[("POST", "responses")] = json_response(
        {"error": {"message": "stream is not supported", "param": "stream", "type": "invalid_request_error"}},
        400,
    )
    with pytest.raises(BadRequestError) as exc:
        runner.call(api, lambda c: c.responses.stream(REQUEST))
    assert exc.value.param == "stream" and "stream is not supported" in str(exc.value)


def test_the_decoder_follows_the_sse_rules() -> None:
    decoder = SSEDecoder()
    lines = [": keep-alive", "event: x", 'data: {"a":', "data:  1}", "id: 7", "", "", "data: [DONE]", ""]
    assert [d for d in map(decoder.feed, lines) if d is not None] == ['{"a":\n 1}', "[DONE]"]
    assert SSEDecoder().feed("data: cut before its blank line") is None  # an unfinished event is dropped


def test_done_terminator_ends_the_stream(runner: Runner, api: FakeAPI) -> None:
    api.routes[("POST", "responses")] = stream_response(
        sse(*EVENTS[:2]) + b"data: [DONE]\n\n" + sse(EVENTS[2])
    )
    events = runner.call(api, lambda c: c.responses.stream(REQUEST))
    assert [e.sequence_number for e in events] == [0, 1]


def test_each_event_is_yielded_before_the_rest_is_sent(settings: ClientSettings) -> None:
    sent: list[int] = []

    def body() -> Iterator[bytes]:
        for i, event in enumerate(EVENTS):
            sent.append(i)
            yield sse(event)

    transport = httpx.MockTransport(lambda _: stream_response(body()))
    with MKA1Client(settings, transport=transport) as c:
        seen = []
        for event in c.responses.stream(REQUEST):
            seen.append((event.sequence_number, len(sent)))
    # Event i is in hand when at most event i+1 has been produced (httpx reads one chunk ahead at most).
    assert all(produced <= seq + 2 for seq, produced in seen) and len(seen) == len(EVENTS)


def test_a_stream_cut_midway_is_a_connection_error(settings: ClientSettings) -> None:
    def body() -> Iterator[bytes]:
        yield sse(EVENTS[0])
        raise httpx.ReadError("peer closed connection")

    transport = httpx.MockTransport(lambda _: stream_response(body()))
    with MKA1Client(settings, transport=transport) as c:
        events = c.responses.stream(REQUEST)
        assert next(events).type == "response.created"
        with pytest.raises(APIConnectionError, match=r"POST responses \(stream\) lost its connection"):
            next(events)


@pytest.mark.parametrize(("store", "attempts"), [(False, 2), (None, 1)])
def test_only_a_stream_that_stores_nothing_is_reopened(
    runner: Runner, api: FakeAPI, store: bool | None, attempts: int
) -> None:
    answers = [json_response({"error": {"message": "busy"}}, 503), stream_response(sse(*EVENTS))]
    api.routes[("POST", "responses")] = lambda _: answers.pop(0)
    retrying = Runner(runner.mode, runner.settings.model_copy(update={"max_retries": 2}))
    request = REQUEST.model_copy(update={"store": store})
    if store is False:
        events = retrying.call(api, lambda c: c.responses.stream(request))
        assert events[-1].type == "response.completed"
    else:
        with pytest.raises(InternalServerError):
            retrying.call(api, lambda c: c.responses.stream(request))
    assert len(api.requests) == attempts
