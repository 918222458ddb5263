"""In-place retries (client.retry): idempotent requests retried with backoff and Retry-After, creating POSTs never."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from client_testkit import FakeAPI, Runner, file_obj, job_obj, json_response, list_env

from client import _requests as req
from client import _responses as parse
from client.errors import (
    APIConnectionError,
    APITimeoutError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
)
from client.models import FileObject, JobCreateRequest, ResponseCreateRequest
from client.retry import DEFAULT_MAX_RETRIES, MAX_DELAY_S, backoff_delay
from client.settings import ClientSettings

JOB_ID = "ftjob_1"


@pytest.fixture
def retrying(runner: Runner) -> Runner:
    """The sync/async runner with in-place retries on (budget 4), recording the delays it asked for."""
    return Runner(runner.mode, runner.settings.model_copy(update={"max_retries": 4}))


def failing_then(
    failures: list[httpx.Response | Exception], then: httpx.Response
) -> Callable[[httpx.Request], httpx.Response]:
    """A handler that fails with ``failures`` in order, then answers ``then``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if failures:
            failure = failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        return then

    return handler


def unavailable(headers: dict[str, str] | None = None) -> httpx.Response:
    return json_response({"error": {"message": "try later"}}, 503, headers)


def rate_limited(headers: dict[str, str]) -> httpx.Response:
    return json_response({"error": {"message": "slow down"}}, 429, headers)


def test_get_retried_on_503_and_429_honouring_retry_after(retrying: Runner, api: FakeAPI) -> None:
    api.routes[("GET", f"fine_tuning/jobs/{JOB_ID}")] = failing_then(
        [rate_limited({"Retry-After": "3"}), httpx.ConnectError("refused"), unavailable()],
        json_response(job_obj(JOB_ID)),
    )
    job = retrying.call(api, lambda c: c.jobs.retrieve(JOB_ID))
    assert job.id == JOB_ID and len(api.requests) == 4
    assert retrying.slept[0] == 3.0  # the server's Retry-After, as given
    assert 1.0 <= retrying.slept[1] <= 1.25  # second retry: 0.5 s doubled, plus up to 25% jitter
    assert 2.0 <= retrying.slept[2] <= 2.5


@pytest.mark.parametrize(
    ("headers", "low", "high"),
    [
        ({"Retry-After": "1.5"}, 1.5, 1.5),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25, 0.25),
        ({"Retry-After": "<HTTP date 30 s ahead>"}, 28.0, 30.0),  # written when the test runs
    ],
)
def test_retry_after_forms_are_honoured(
    retrying: Runner, api: FakeAPI, headers: dict[str, str], low: float, high: float
) -> None:
    if headers.get("Retry-After", "").startswith("<HTTP date"):
        headers = {"Retry-After": email.utils.formatdate(time.time() + 30, usegmt=True)}
    api.routes[("GET", "files/f1")] = failing_then([rate_limited(headers)], json_response(file_obj("f1")))
    assert retrying.call(api, lambda c: c.files.retrieve("f1")).id == "f1"
    assert len(api.requests) == 2 and low <= retrying.slept[0] <= high


def test_retry_after_on_a_503_is_honoured(retrying: Runner, api: FakeAPI) -> None:
    api.routes[("GET", "files/f1")] = failing_then(
        [unavailable({"Retry-After": "5"})], json_response(file_obj("f1"))
    )
    retrying.call(api, lambda c: c.files.retrieve("f1"))
    assert retrying.slept == [5.0]


def test_retry_after_beyond_a_minute_surfaces_instead_of_hanging(retrying: Runner, api: FakeAPI) -> None:
    api.routes[("GET", "files/f1")] = rate_limited({"Retry-After": "600"})
    with pytest.raises(RateLimitError) as info:
        retrying.call(api, lambda c: c.files.retrieve("f1"))
    assert info.value.retry_after == 600.0 and len(api.requests) == 1 and retrying.slept == []


@pytest.mark.parametrize(
    ("route", "call"),
    [
        (
            ("POST", "fine_tuning/jobs"),
            lambda c: c.jobs.create(JobCreateRequest(model="m", training_file="f")),
        ),
        (("POST", "responses"), lambda c: c.responses.create(ResponseCreateRequest(model="m", input="hi"))),
        (("POST", f"fine_tuning/jobs/{JOB_ID}/cancel"), lambda c: c.jobs.cancel(JOB_ID)),
    ],
)
@pytest.mark.parametrize("failure", ["503", "should-retry", "dropped"])
def test_creating_post_is_never_retried_in_place(
    retrying: Runner, api: FakeAPI, route: tuple[str, str], call: Callable, failure: str
) -> None:
    # Even a server saying "x-should-retry: true" cannot make the client repeat a POST that may have
    # created its object: only a caller that looks it up first may send it again.
    responses = {"503": unavailable(), "should-retry": unavailable({"x-should-retry": "true"})}
    api.routes[route] = failing_then(
        [responses.get(failure) or httpx.RemoteProtocolError("server disconnected")], json_response({})
    )
    with pytest.raises((InternalServerError, APIConnectionError)):
        retrying.call(api, call)
    assert len(api.requests) == 1 and retrying.slept == []


def test_upload_is_never_retried_in_place(retrying: Runner, api: FakeAPI, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"messages": []}\n')
    api.routes[("POST", "files")] = unavailable()
    with pytest.raises(InternalServerError):
        retrying.call(api, lambda c: c.files.upload(path))
    assert len(api.requests) == 1 and retrying.slept == []


def test_every_spec_says_whether_it_may_be_repeated(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("{}\n")
    creating = [
        req.files_upload(path),
        req.jobs_create(JobCreateRequest(model="m", training_file="f")),
        req.responses_create(ResponseCreateRequest(model="m", input="x")),
        *(req.jobs_action(JOB_ID, action) for action in ("pause", "resume", "cancel")),
    ]
    reads = [
        req.files_list(),
        req.files_retrieve("f"),
        req.files_content("f"),
        req.files_delete("f"),
        req.jobs_list(),
        req.jobs_retrieve(JOB_ID),
        req.jobs_events(JOB_ID),
        req.jobs_checkpoints(JOB_ID),
    ]
    assert [s.method for s in creating] == ["POST"] * 6 and not any(s.idempotent for s in creating)
    assert all(s.idempotent for s in reads)
    # An idempotency key is what makes a creating POST safe to repeat, or a request that stores nothing.
    keyed = req.RequestSpec("POST", "responses", parse.model(FileObject), idempotency_key="k-1")
    assert keyed.idempotent
    assert req.responses_create(ResponseCreateRequest(model="m", input="x", store=False)).idempotent
    assert not req.responses_create(ResponseCreateRequest(model="m", input="x", store=True)).idempotent


def test_unstored_response_is_retried_in_place(retrying: Runner, api: FakeAPI) -> None:
    answer = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": "m",
        "status": "completed",
        "output": [],
    }
    api.routes[("POST", "responses")] = failing_then([unavailable()], json_response(answer))
    request = ResponseCreateRequest(model="m", input="hi", store=False)
    assert retrying.call(api, lambda c: c.responses.create(request)).id == "resp_1"
    assert len(api.requests) == 2 and len(retrying.slept) == 1


def test_post_with_idempotency_key_is_retried_and_sends_the_key(retrying: Runner, api: FakeAPI) -> None:
    spec = req.RequestSpec("POST", "files/f1/copy", parse.model(FileObject), json={}, idempotency_key="key-7")
    api.routes[("POST", "files/f1/copy")] = failing_then([unavailable()], json_response(file_obj("f2")))

    async def send_async(c):  # type: ignore[no-untyped-def]
        return await c.send(spec)

    result = retrying.call(api, lambda c: c.send(spec) if retrying.mode == "sync" else send_async(c))
    assert result.id == "f2" and len(api.requests) == 2
    assert [r.headers["Idempotency-Key"] for r in api.requests] == ["key-7", "key-7"]


def test_delete_is_retried(retrying: Runner, api: FakeAPI) -> None:
    deleted = json_response({"id": "f1", "object": "file", "deleted": True})
    api.routes[("DELETE", "files/f1")] = failing_then([unavailable(), httpx.ReadTimeout("slow")], deleted)
    assert retrying.call(api, lambda c: c.files.delete("f1")).deleted
    assert len(api.requests) == 3 and len(retrying.slept) == 2


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("server disconnected"),
        httpx.ReadTimeout("read timed out"),
        httpx.PoolTimeout("pool timed out"),
    ],
)
def test_connection_errors_are_retried(retrying: Runner, api: FakeAPI, failure: Exception) -> None:
    api.routes[("GET", "files/f1")] = failing_then([failure], json_response(file_obj("f1")))
    assert retrying.call(api, lambda c: c.files.retrieve("f1")).id == "f1"
    assert len(api.requests) == 2 and 0.5 <= retrying.slept[0] <= 0.625


def test_gives_up_after_max_retries_with_the_last_error(retrying: Runner, api: FakeAPI) -> None:
    api.routes[("GET", "files/f1")] = failing_then(
        [httpx.ReadTimeout("slow")] * 10, json_response(file_obj("f1"))
    )
    with pytest.raises(APITimeoutError) as info:
        retrying.call(api, lambda c: c.files.retrieve("f1"))
    assert len(api.requests) == 5 and len(retrying.slept) == 4  # 1 + max_retries
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_max_retries_zero_disables_retries(runner: Runner, api: FakeAPI) -> None:
    assert runner.settings.max_retries == 0
    api.routes[("GET", "files/f1")] = failing_then([unavailable()], json_response(file_obj("f1")))
    with pytest.raises(InternalServerError):
        runner.call(api, lambda c: c.files.retrieve("f1"))
    assert len(api.requests) == 1 and runner.slept == []


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
def test_permanent_errors_are_raised_at_once(retrying: Runner, api: FakeAPI, status: int) -> None:
    api.routes[("GET", "files/f1")] = json_response({"error": {"message": "no"}}, status)
    with pytest.raises(Exception) as info:
        retrying.call(api, lambda c: c.files.retrieve("f1"))
    assert getattr(info.value, "status_code", None) == status
    assert len(api.requests) == 1 and retrying.slept == []


def test_x_should_retry_header_is_obeyed(retrying: Runner, api: FakeAPI) -> None:
    api.routes[("GET", "files/f1")] = unavailable({"x-should-retry": "false"})
    with pytest.raises(InternalServerError):
        retrying.call(api, lambda c: c.files.retrieve("f1"))
    assert len(api.requests) == 1
    api.requests.clear()
    api.routes[("GET", "files/f2")] = failing_then(
        [json_response({"error": {"message": "locked"}}, 404, {"x-should-retry": "true"})],
        json_response(file_obj("f2")),
    )
    assert retrying.call(api, lambda c: c.files.retrieve("f2")).id == "f2" and len(api.requests) == 2


def test_a_page_is_retried_without_restarting_the_listing(retrying: Runner, api: FakeAPI) -> None:
    pages = {
        None: json_response(list_env([file_obj("f1")], has_more=True)),
        "f1": json_response(list_env([file_obj("f2")], has_more=False)),
    }
    failures = [unavailable()]

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        if after == "f1" and failures:
            return failures.pop()
        return pages[after]

    api.routes[("GET", "files")] = handler
    assert [f.id for f in retrying.call(api, lambda c: c.files.list())] == ["f1", "f2"]
    assert [r.url.params.get("after") for r in api.requests] == [None, "f1", "f1"]


def test_backoff_doubles_from_half_a_second_up_to_the_cap() -> None:
    for attempt, base in enumerate((0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0), start=1):
        delay = backoff_delay(attempt)
        assert base <= delay <= base * 1.25, (attempt, delay)
    assert backoff_delay(10_000) <= MAX_DELAY_S * 1.25  # no overflow for absurd attempt numbers
    assert backoff_delay(1, 7.0) == 7.0 and backoff_delay(1, 500.0) == 60.0
    assert backoff_delay(3, None, initial_s=1.0, max_s=3.0) <= 3.75


def test_max_retries_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MKA1_MAX_RETRIES", raising=False)
    assert ClientSettings().max_retries == DEFAULT_MAX_RETRIES
    monkeypatch.setenv("MKA1_MAX_RETRIES", "0")
    assert ClientSettings().max_retries == 0
    monkeypatch.setenv("MKA1_MAX_RETRIES", "-1")
    with pytest.raises(ValueError, match="max_retries"):
        ClientSettings()


def test_not_found_is_not_transient_even_for_delete(retrying: Runner, api: FakeAPI) -> None:
    api.routes[("DELETE", "files/f1")] = json_response({"error": {"message": "gone"}}, 404)
    with pytest.raises(NotFoundError):
        retrying.call(api, lambda c: c.files.delete("f1"))
    assert len(api.requests) == 1
