"""Error mapping, Retry-After parsing, malformed bodies, transport failures and the retry predicate."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest
from client_testkit import FakeAPI, Runner, json_response

from client.errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    error_class_for_status,
)
from client.models import ResponseCreateRequest
from client.retry import is_transient, parse_retry_after, retry_delay_hint

STATUS_CLASSES = [
    (400, BadRequestError),
    (401, AuthenticationError),
    (403, PermissionDeniedError),
    (404, NotFoundError),
    (409, ConflictError),
    (413, PayloadTooLargeError),
    (422, UnprocessableEntityError),
    (429, RateLimitError),
    (500, InternalServerError),
    (502, InternalServerError),
    (503, InternalServerError),
    (418, APIStatusError),
]


def error_body(message: str = "bad thing", code: str | None = "some_code", param: str | None = None) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


@pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
def test_status_maps_to_class_with_fields(runner: Runner, api: FakeAPI, status: int, cls: type) -> None:
    api.routes[("GET", "files/f1")] = json_response(
        error_body("training_file is bad", "invalid_file", "training_file"),
        status,
        {"x-request-id": "req_77"},
    )
    with pytest.raises(APIStatusError) as info:
        runner.call(api, lambda c: c.files.retrieve("f1"))
    exc = info.value
    assert type(exc) is cls
    assert exc.status_code == status
    assert exc.code == "invalid_file" and exc.param == "training_file" and exc.type == "invalid_request_error"
    assert exc.message == "training_file is bad"
    assert exc.request_id == "req_77"
    assert exc.body == error_body("training_file is bad", "invalid_file", "training_file")
    text = str(exc)
    assert str(status) in text and "training_file is bad" in text and "req_77" in text


def test_retry_after_seconds(runner: Runner, api: FakeAPI) -> None:
    api.routes[("POST", "responses")] = json_response(error_body("slow down"), 429, {"Retry-After": "7"})
    with pytest.raises(RateLimitError) as info:
        runner.call(api, lambda c: c.responses.create(ResponseCreateRequest(model="m", input="x")))
    assert info.value.retry_after == 7.0
    assert retry_delay_hint(info.value) == 7.0
    assert is_transient(info.value)


def test_retry_after_http_date(runner: Runner, api: FakeAPI) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    api.routes[("GET", "files/f1")] = json_response(error_body(), 429, {"Retry-After": when})
    with pytest.raises(RateLimitError) as info:
        runner.call(api, lambda c: c.files.retrieve("f1"))
    assert info.value.retry_after is not None
    assert 100 <= info.value.retry_after <= 121


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past: retry now
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
    ],
)
def test_parse_retry_after_forms(headers: dict[str, str], expected: float | None) -> None:
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT").timestamp()
    assert parse_retry_after(httpx.Headers(headers), now=now) == expected


def test_html_502_page_gives_clear_error(runner: Runner, api: FakeAPI) -> None:
    html = (
        "<html>\n<head><title>502 Bad Gateway</title></head>\n<body><center><h1>502 Bad Gateway</h1></center>"
        + ("<!-- padding -->" * 100)
    )
    api.routes[("GET", "files/f1")] = httpx.Response(
        502, content=html.encode(), headers={"content-type": "text/html"}
    )
    with pytest.raises(InternalServerError) as info:
        runner.call(api, lambda c: c.files.retrieve("f1"))
    text = str(info.value)
    assert "502" in text and "Bad Gateway" in text and "<title>502 Bad Gateway</title>" in text
    assert len(text) < 400  # a snippet, not the whole page
    assert info.value.code is None and info.value.body == html
    assert is_transient(info.value)


def test_empty_body_error(runner: Runner, api: FakeAPI) -> None:
    api.routes[("DELETE", "files/f1")] = httpx.Response(503)
    with pytest.raises(InternalServerError) as info:
        runner.call(api, lambda c: c.files.delete("f1"))
    assert "503" in str(info.value) and "empty body" in str(info.value)
    assert info.value.body is None


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"error": "plain string error"}', "plain string error"),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b'["weird", "json"]', "weird"),
        (b"\xff\xfe not utf8", "not utf8"),
    ],
)
def test_odd_error_bodies(runner: Runner, api: FakeAPI, content: bytes, needle: str) -> None:
    api.routes[("GET", "files/f1")] = httpx.Response(404, content=content)
    with pytest.raises(NotFoundError) as info:
        runner.call(api, lambda c: c.files.retrieve("f1"))
    assert "404" in str(info.value) and needle in str(info.value)


def test_invalid_success_body_is_validation_error(runner: Runner, api: FakeAPI) -> None:
    api.routes[("GET", "files/f1")] = httpx.Response(200, content=b"<html>oops</html>")
    with pytest.raises(APIResponseValidationError) as info:
        runner.call(api, lambda c: c.files.retrieve("f1"))
    assert "FileObject" in str(info.value) and "oops" in str(info.value)
    assert not is_transient(info.value)


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ConnectError("connection refused"), APIConnectionError),
        (httpx.RemoteProtocolError("server disconnected"), APIConnectionError),
        (httpx.ReadError("reset by peer"), APIConnectionError),
        (httpx.ConnectTimeout("connect timed out"), APITimeoutError),
        (httpx.ReadTimeout("read timed out"), APITimeoutError),
        (httpx.WriteTimeout("write timed out"), APITimeoutError),
        (httpx.PoolTimeout("pool timed out"), APITimeoutError),
    ],
)
def test_transport_errors_map_to_our_classes(runner: Runner, exc: Exception, cls: type) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(cls) as info:
        runner.call(boom, lambda c: c.jobs.retrieve("ftjob_1"))
    assert type(info.value) is cls
    assert info.value.__cause__ is exc
    assert "GET fine_tuning/jobs/ftjob_1" in str(info.value) and str(exc) in str(info.value)
    assert is_transient(info.value)
    if cls is APIConnectionError:
        # Refused connections and dropped ones read differently: they call for different fixes.
        expected = "failed to connect" if isinstance(exc, httpx.ConnectError) else "lost its connection"
        assert expected in str(info.value)


def status_exc(code: int) -> APIStatusError:
    return error_class_for_status(code)(f"HTTP {code}", status_code=code)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (APIConnectionError("x"), True),
        (APITimeoutError("x"), True),
        (status_exc(408), True),
        (status_exc(429), True),
        (status_exc(500), True),
        (status_exc(502), True),
        (status_exc(503), True),
        (status_exc(504), True),
        (status_exc(400), False),
        (status_exc(401), False),
        (status_exc(403), False),
        (status_exc(404), False),
        (status_exc(409), False),
        (status_exc(413), False),
        (status_exc(422), False),
        (APIError("generic"), False),
        (APIResponseValidationError("bad body", status_code=200), False),
        (ValueError("unknown"), False),
        (RuntimeError("unknown"), False),
        (KeyboardInterrupt(), False),
    ],
)
def test_is_transient_truth_table(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_retry_delay_hint() -> None:
    assert retry_delay_hint(RateLimitError("x", status_code=429, retry_after=3.0)) == 3.0
    assert retry_delay_hint(RateLimitError("x", status_code=429)) is None
    assert retry_delay_hint(status_exc(503)) is None
    assert retry_delay_hint(ValueError()) is None
    # A 503 may carry Retry-After too (RFC 9110 10.2.3): honour it like a 429's.
    unavailable = InternalServerError(
        "HTTP 503", status_code=503, response=httpx.Response(503, headers={"Retry-After": "4"})
    )
    assert retry_delay_hint(unavailable) == 4.0


@pytest.mark.parametrize(("header", "transient"), [("true", True), ("false", False)])
def test_x_should_retry_overrides_the_status_rule(header: str, transient: bool) -> None:
    for status in (400, 503):
        exc = error_class_for_status(status)(
            f"HTTP {status}",
            status_code=status,
            response=httpx.Response(status, headers={"x-should-retry": header}),
        )
        assert is_transient(exc) is transient


def test_hierarchy() -> None:
    assert issubclass(APITimeoutError, APIConnectionError)
    for _, cls in STATUS_CLASSES:
        assert issubclass(cls, APIStatusError) and issubclass(cls, APIError)
