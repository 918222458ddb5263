"""Every endpoint through the sync and the async client: method, path, query, headers, body, parsing."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from client_testkit import (
    SECRET,
    FakeAPI,
    Runner,
    ckpt_obj,
    event_obj,
    file_obj,
    job_obj,
    json_response,
    list_env,
    paged,
    parse_multipart,
)

from client import USER_AGENT, ClientSettings
from client.models import (
    FileDeleted,
    FileObject,
    FineTuningJob,
    InputMessage,
    JobCreateRequest,
    JobStatus,
    ListPage,
    Method,
    ResponseCreateRequest,
    SupervisedHyperparameters,
    SupervisedMethod,
)

JOB = "ftjob_0123456789abcdef0123456789abcdef"


def assert_common_headers(request: httpx.Request) -> None:
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["x-on-behalf-of"] == "user-42"
    assert request.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("ftpipe/")


def test_upload_streams_multipart_with_purpose_and_file(runner: Runner, api: FakeAPI, tmp_path: Path) -> None:
    data = b'{"messages": [{"role": "user", "content": "hi"}]}\n' * 5000  # > one 64 KiB chunk
    path = tmp_path / "train.jsonl"
    path.write_bytes(data)
    api.routes[("POST", "files")] = file_obj("file-up1", bytes=len(data))

    result = runner.call(api, lambda c: c.files.upload(path, purpose="fine-tune"))

    assert isinstance(result, FileObject) and result.id == "file-up1" and result.bytes == len(data)
    req = api.last
    assert req.method == "POST" and req.url.path == "/api/v1/llm/files"
    assert_common_headers(req)
    assert req.headers["content-type"].startswith("multipart/form-data; boundary=")
    # A known Content-Length means the body was sized from disk, not buffered or chunked.
    assert int(req.headers["content-length"]) == len(req.content)
    parts = parse_multipart(req)
    assert set(parts) == {"purpose", "file"}
    assert parts["purpose"].data == b"fine-tune" and parts["purpose"].filename is None
    assert parts["file"].filename == "train.jsonl"
    assert parts["file"].content_type == "application/jsonl"
    assert parts["file"].data == data
    # purpose precedes the file so a server can route the stream before reading it
    assert req.content.index(b'name="purpose"') < req.content.index(b'name="file"')


def test_upload_non_jsonl_is_octet_stream_and_filename_override(
    runner: Runner, api: FakeAPI, tmp_path: Path
) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x00\x01\x02")
    api.routes[("POST", "files")] = file_obj("file-up2")
    runner.call(api, lambda c: c.files.upload(path, purpose="user_data", filename="renamed.dat"))
    parts = parse_multipart(api.last)
    assert parts["file"].content_type == "application/octet-stream"
    assert parts["file"].filename == "renamed.dat"
    assert parts["file"].data == b"\x00\x01\x02"
    assert parts["purpose"].data == b"user_data"


def test_upload_missing_file_raises_before_sending(runner: Runner, api: FakeAPI, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        runner.call(api, lambda c: c.files.upload(tmp_path / "nope.jsonl"))
    assert api.requests == []


def test_files_list_follows_cursor_across_three_pages(runner: Runner, api: FakeAPI) -> None:
    items = [file_obj(f"file-{i}") for i in range(7)]
    api.routes[("GET", "files")] = paged(items, page_size=3)

    result = runner.call(api, lambda c: c.files.list(purpose="fine-tune", order="desc", limit=3))

    assert [f.id for f in result] == [f"file-{i}" for i in range(7)]
    assert len(api.requests) == 3
    queries = [dict(r.url.params) for r in api.requests]
    assert queries[0] == {"limit": "3", "order": "desc", "purpose": "fine-tune"}
    assert queries[1]["after"] == "file-2" and queries[2]["after"] == "file-5"
    for r in api.requests:
        assert r.method == "GET" and r.url.path == "/api/v1/llm/files"
        assert_common_headers(r)


def test_list_without_last_id_uses_last_item_id(runner: Runner, api: FakeAPI) -> None:
    pages = {
        None: {"object": "list", "data": [file_obj("f1"), file_obj("f2")], "has_more": True},
        "f2": {"object": "list", "data": [file_obj("f3")], "has_more": False},
    }
    api.routes[("GET", "files")] = lambda r: json_response(pages[r.url.params.get("after")])
    assert [f.id for f in runner.call(api, lambda c: c.files.list())] == ["f1", "f2", "f3"]


def test_list_stops_if_server_repeats_cursor(runner: Runner, api: FakeAPI) -> None:
    # A buggy server that always says has_more with the same page must not make us loop forever.
    api.routes[("GET", "files")] = json_response(list_env([file_obj("f1")], has_more=True))
    result = runner.call(api, lambda c: c.files.list())
    assert [f.id for f in result] == ["f1", "f1"]
    assert len(api.requests) == 2


def test_files_retrieve_delete_content(runner: Runner, api: FakeAPI) -> None:
    api.routes[("GET", "files/file-abc123")] = file_obj("file-abc123", unknown_new_field={"x": 1})
    api.routes[("DELETE", "files/file-abc123")] = {"id": "file-abc123", "object": "file", "deleted": True}
    api.routes[("GET", "files/file-abc123/content")] = httpx.Response(
        200, content=b"line1\nline2\n", headers={"content-type": "application/octet-stream"}
    )

    got = runner.call(api, lambda c: c.files.retrieve("file-abc123"))
    assert isinstance(got, FileObject) and got.filename == "train.jsonl"
    assert got.model_extra == {"unknown_new_field": {"x": 1}}
    assert api.last.method == "GET"

    deleted = runner.call(api, lambda c: c.files.delete("file-abc123"))
    assert isinstance(deleted, FileDeleted) and deleted.deleted is True
    assert api.last.method == "DELETE" and api.last.url.path == "/api/v1/llm/files/file-abc123"

    content = runner.call(api, lambda c: c.files.content("file-abc123"))
    assert content == b"line1\nline2\n"
    assert api.last.url.path == "/api/v1/llm/files/file-abc123/content"
    for r in api.requests:
        assert_common_headers(r)


def test_ids_are_path_escaped(runner: Runner, api: FakeAPI) -> None:
    api.routes[("GET", "files/a%2Fb")] = file_obj("a/b")
    runner_result = runner.call(api, lambda c: c.files.retrieve("a/b"))
    assert runner_result.id == "a/b"
    assert api.last.url.raw_path == b"/api/v1/llm/files/a%2Fb"


def test_jobs_create_sends_body_without_nones(runner: Runner, api: FakeAPI) -> None:
    api.routes[("POST", "fine_tuning/jobs")] = job_obj(JOB)
    request = JobCreateRequest(
        model="local:micro-chat",
        training_file="file-abc123",
        suffix="demo",
        seed=7,
        method=Method(
            type="supervised",
            supervised=SupervisedMethod(
                hyperparameters=SupervisedHyperparameters(
                    n_epochs=3, batch_size="auto", learning_rate_multiplier=2.0
                )
            ),
        ),
        metadata={"run": "a"},
    )

    job = runner.call(api, lambda c: c.jobs.create(request))

    assert isinstance(job, FineTuningJob) and job.id == JOB and job.status is JobStatus.QUEUED
    req = api.last
    assert req.method == "POST" and req.url.path == "/api/v1/llm/fine_tuning/jobs"
    assert_common_headers(req)
    assert req.headers["content-type"] == "application/json"
    assert json.loads(req.content) == {
        "model": "local:micro-chat",
        "training_file": "file-abc123",
        "suffix": "demo",
        "seed": 7,
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 2.0}
            },
        },
        "metadata": {"run": "a"},
    }


def test_jobs_list_metadata_filter_and_pages(runner: Runner, api: FakeAPI) -> None:
    items = [job_obj(f"ftjob_{i}") for i in range(5)]
    api.routes[("GET", "fine_tuning/jobs")] = paged(items, page_size=2)

    jobs = runner.call(api, lambda c: c.jobs.list(metadata={"sweep": "s1", "arm": "b"}, limit=2))

    assert [j.id for j in jobs] == [f"ftjob_{i}" for i in range(5)]
    assert len(api.requests) == 3
    first = api.requests[0].url.params
    assert first["metadata[sweep]"] == "s1" and first["metadata[arm]"] == "b" and first["limit"] == "2"
    assert "after" not in first
    assert api.requests[2].url.params["after"] == "ftjob_3"
    assert api.requests[2].url.params["metadata[sweep]"] == "s1"


def test_jobs_retrieve_and_actions(runner: Runner, api: FakeAPI) -> None:
    api.routes[("GET", f"fine_tuning/jobs/{JOB}")] = job_obj(JOB, status="running")
    for action, status in (("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
        api.routes[("POST", f"fine_tuning/jobs/{JOB}/{action}")] = job_obj(JOB, status=status)

    assert runner.call(api, lambda c: c.jobs.retrieve(JOB)).status is JobStatus.RUNNING
    paused = runner.call(api, lambda c: c.jobs.pause(JOB))
    assert paused.status is JobStatus.PAUSED and not paused.is_terminal
    assert runner.call(api, lambda c: c.jobs.resume(JOB)).status is JobStatus.RUNNING
    cancelled = runner.call(api, lambda c: c.jobs.cancel(JOB))
    assert cancelled.status is JobStatus.CANCELLED and cancelled.is_terminal

    assert [(r.method, r.url.path) for r in api.requests] == [
        ("GET", f"/api/v1/llm/fine_tuning/jobs/{JOB}"),
        ("POST", f"/api/v1/llm/fine_tuning/jobs/{JOB}/pause"),
        ("POST", f"/api/v1/llm/fine_tuning/jobs/{JOB}/resume"),
        ("POST", f"/api/v1/llm/fine_tuning/jobs/{JOB}/cancel"),
    ]
    for r in api.requests:
        assert_common_headers(r)


def test_list_events_single_page(runner: Runner, api: FakeAPI) -> None:
    api.routes[("GET", f"fine_tuning/jobs/{JOB}/events")] = list_env(
        [event_obj("ev3", type="metrics", data={"step": 3, "train_loss": 0.5}), event_obj("ev2")],
        has_more=True,
    )
    page = runner.call(api, lambda c: c.jobs.list_events(JOB, after="ev4", limit=2))
    assert isinstance(page, ListPage) and page.has_more
    assert [e.id for e in page.data] == ["ev3", "ev2"]
    assert page.data[0].data == {"step": 3, "train_loss": 0.5}
    assert dict(api.last.url.params) == {"after": "ev4", "limit": "2"}
    assert api.last.url.path == f"/api/v1/llm/fine_tuning/jobs/{JOB}/events"


def test_list_checkpoints_pages(runner: Runner, api: FakeAPI) -> None:
    items = [ckpt_obj(f"ftckpt_{i}", step=10 * i) for i in range(1, 6)]
    api.routes[("GET", f"fine_tuning/jobs/{JOB}/checkpoints")] = paged(items, page_size=2)
    ckpts = runner.call(api, lambda c: c.jobs.list_checkpoints(JOB))
    assert [c.step_number for c in ckpts] == [10, 20, 30, 40, 50]
    assert ckpts[0].metrics.train_loss == 1.5 and ckpts[0].metrics.valid_loss is None
    assert ckpts[0].fine_tuned_model_checkpoint == "ft:local:ckpt-10"
    assert len(api.requests) == 3
    assert api.requests[1].url.params["after"] == "ftckpt_2"


def test_responses_create(runner: Runner, api: FakeAPI) -> None:
    api.routes[("POST", "responses")] = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1700000000,
        "status": "completed",
        "model": "ft:local:abc",
        "output": [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
        ],
        "usage": {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6},
    }
    request = ResponseCreateRequest(
        model="ft:local:abc",
        input=[InputMessage(role="user", content="Hi")],
        instructions="be brief",
        max_output_tokens=16,
        temperature=0.0,
    )
    resp = runner.call(api, lambda c: c.responses.create(request))
    assert resp.output_text == "Hello"
    assert resp.usage is not None and resp.usage.total_tokens == 6
    req = api.last
    assert req.method == "POST" and req.url.path == "/api/v1/llm/responses"
    assert_common_headers(req)
    assert json.loads(req.content) == {
        "model": "ft:local:abc",
        "input": [{"type": "message", "role": "user", "content": "Hi"}],
        "instructions": "be brief",
        "max_output_tokens": 16,
        "temperature": 0.0,
    }


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_no_key_and_no_obo_sends_neither_header(mode: str, api: FakeAPI) -> None:
    api.routes[("GET", "files/f1")] = file_obj("f1")
    runner = Runner(mode, ClientSettings(base_url="http://127.0.0.1:9/v1/"))
    runner.call(api, lambda c: c.files.retrieve("f1"))
    assert "authorization" not in api.last.headers
    assert "x-on-behalf-of" not in api.last.headers
    assert api.last.url.path == "/v1/files/f1"  # trailing slash in base_url is harmless
    assert api.last.headers["user-agent"] == USER_AGENT


def test_the_async_client_keeps_a_connection_per_call_in_flight_when_asked() -> None:
    # The eval stage has up to 128 calls in flight on the embedded backend: httpx's default pool (100 open,
    # 20 kept alive) would hold the last ones back until the first answers came, and reconnect each round.
    # Over pools of at most POOL_SIZE: httpcore's pool bookkeeping is quadratic in its size.
    from client.async_client import POOL_SIZE, AsyncMKA1Client

    settings = ClientSettings(base_url="http://127.0.0.1:9/v1", api_key="k")
    for wanted in (128, 105, 16, 5):
        pools = [p._transport._pool for p in AsyncMKA1Client(settings, max_connections=wanted)._pools]  # type: ignore[attr-defined]
        assert sum(p._max_connections for p in pools) == wanted
        assert all(p._max_keepalive_connections == p._max_connections <= POOL_SIZE for p in pools)
        assert max(p._max_connections for p in pools) - min(p._max_connections for p in pools) <= 1


def test_each_async_request_goes_to_the_pool_with_the_fewest_in_flight() -> None:
    from contextlib import ExitStack

    from client.async_client import AsyncMKA1Client

    client = AsyncMKA1Client(ClientSettings(base_url="http://127.0.0.1:9/v1"), max_connections=40)
    assert len(client._pools) == 3
    with ExitStack() as held:
        chosen = [id(held.enter_context(client._pool())) for _ in range(7)]
        assert client._in_flight == [3, 2, 2]
    assert client._in_flight == [0, 0, 0]
    assert [chosen.count(id(p)) for p in client._pools] == [3, 2, 2]


def test_an_async_stream_counts_as_in_flight_on_its_pool_until_it_is_closed() -> None:
    # Its connection stays busy after the headers: a pool that had given the count back would take a 17th
    # stream onto 16 live ones while another pool sat empty.
    import asyncio

    from client import _requests as req
    from client.async_client import AsyncMKA1Client

    transport = httpx.MockTransport(lambda r: httpx.Response(200, text="data: x\n\n"))
    client = AsyncMKA1Client(ClientSettings(base_url="http://127.0.0.1:9/v1"), transport=transport)
    seen: list[list[int]] = []

    async def main() -> None:
        spec = req.responses_stream(ResponseCreateRequest(model="m", input="hi"))
        async with client.open_stream(spec):
            seen.append(list(client._in_flight))
        seen.append(list(client._in_flight))
        await client.aclose()

    asyncio.run(main())
    assert seen == [[1], [0]]
