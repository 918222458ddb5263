"""Each fault kind as the client sees it, the after-work kinds really did the work, counters add up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from backend.app import create_app
from backend.faults import (
    KINDS,
    FaultConfig,
    FaultInjectionMiddleware,
    FaultSpecError,
    parse_rates,
    route_group,
)
from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from client import ClientSettings, MKA1Client
from client.errors import APIConnectionError, APITimeoutError, InternalServerError, RateLimitError
from client.models import JobCreateRequest, ResponseCreateRequest
from tests.reliability.reliability_kit import fault_stats, server_view, set_faults, small_dataset


def test_parse_rates_spreads_and_overrides() -> None:
    rates = parse_rates("all=0.4,files.drop_after=0.5,events=0")
    assert rates["all"] == {k: pytest.approx(0.05) for k in KINDS}
    assert rates["files"] == {"drop_after": 0.5}
    assert sum(rates["events"].values()) == 0
    cfg = FaultConfig(rates=rates)
    assert cfg.table("jobs") == rates["all"] and cfg.table("files") == {"drop_after": 0.5}
    for bad in ("all", "all=1.5", "nope=0.1", "files.nope=0.1", "files.500=0.7,files.503=0.7"):
        with pytest.raises(FaultSpecError):
            parse_rates(bad)
    with pytest.raises(ValueError):
        BackendSettings(fault_rates="all=2")


def test_route_groups() -> None:
    assert route_group("/api/v1/llm/health") is None and route_group("/v1/_faults") is None
    assert route_group("/api/v1/llm/files/file-1/content") == "files"
    assert route_group("/v1/fine_tuning/jobs/j/events") == "events"
    assert route_group("/api/v1/llm/fine_tuning/jobs/j/checkpoints") == "checkpoints"
    assert route_group("/api/v1/llm/fine_tuning/jobs/j/cancel") == "jobs"
    assert route_group("/api/v1/llm/responses") == "responses"


def _draws(cfg: FaultConfig, n: int = 200) -> list[str | None]:
    mw = FaultInjectionMiddleware(_noop_app, cfg)
    return [mw.pick("files") for _ in range(n)]


async def _noop_app(scope: Scope, receive: Receive, send: Send) -> None:
    return None


def test_same_seed_same_draws() -> None:
    cfg = FaultConfig(rates=parse_rates("all=0.5"), seed=42)
    first, second = _draws(cfg), _draws(cfg)
    assert first == second and 60 < sum(d is not None for d in first) < 140
    assert _draws(FaultConfig(rates=cfg.rates, seed=43)) != first


def test_debug_route_absent_without_faults(tmp_path: Path) -> None:
    async def probe() -> int:
        app = create_app(BackendSettings(data_dir=tmp_path, api_key="k"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return (await c.get("/api/v1/llm/_faults", headers={"Authorization": "Bearer k"})).status_code

    assert asyncio.run(probe()) == 404


@pytest.fixture(scope="module")
def kinds_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """One fault kind per route group, always injected."""
    spec = "files.429=1,jobs.503=1,events.drop=1,checkpoints.500=1,responses.slow=1,all.502=1"
    settings = BackendSettings(
        data_dir=tmp_path_factory.mktemp("kinds"), fault_rates=spec, fault_slow_s=2.0, fault_retry_after_s=0.5
    )
    with start_backend(settings, port=0) as rb:
        yield rb


def _client(rb: RunningBackend, timeout_s: float = 30.0, max_retries: int = 0) -> MKA1Client:
    # Retries off by default: these tests look at each fault as one failed call.
    settings = ClientSettings(
        base_url=rb.base_url, api_key=rb.api_key, timeout_s=timeout_s, max_retries=max_retries
    )
    return MKA1Client(settings, sleep=lambda _: None)


@pytest.mark.integration
def test_each_kind_as_the_client_sees_it(kinds_backend: RunningBackend) -> None:
    rb = kinds_backend
    with _client(rb, timeout_s=1.0) as c:
        with pytest.raises(RateLimitError) as rl:
            c.files.retrieve("file-x")
        assert rl.value.retry_after == 0.5
        with pytest.raises(InternalServerError) as e503:
            c.jobs.retrieve("ftjob-x")
        assert e503.value.status_code == 503
        with pytest.raises(APIConnectionError) as dropped:
            c.jobs.list_events("ftjob-x")
        assert not isinstance(dropped.value, APITimeoutError)  # a closed socket, not a timeout
        with pytest.raises(InternalServerError):
            list(c.jobs.list_checkpoints("ftjob-x"))
        with pytest.raises(APITimeoutError):  # the answer comes 2 s late; the client waits 1 s
            c.responses.create(
                ResponseCreateRequest(model="local:micro-chat", input="hi", max_output_tokens=2)
            )
    assert httpx.get(f"{rb.base_url}/health", timeout=60).status_code == 200  # never faulted
    key = {"Authorization": f"Bearer {rb.api_key.get_secret_value()}"}  # the key is checked before faults
    assert httpx.get(f"{rb.base_url}/nope", headers=key, timeout=60).status_code == 502  # other routes: "all"
    stats = fault_stats(rb)
    assert stats["injected"] == {
        "files": {"429": 1},
        "jobs": {"503": 1},
        "events": {"drop": 1},
        "checkpoints": {"500": 1},
        "responses": {"slow": 1},
        "all": {"502": 1},
    }
    assert stats["total_injected"] == 6 == stats["total_requests"]


@pytest.mark.integration
def test_after_work_kinds_did_the_work(tmp_path: Path) -> None:
    """drop_after on upload and 500_after on job create: the client sees an error, the server has the object."""
    data = small_dataset(tmp_path / "ds")
    settings = BackendSettings(data_dir=tmp_path / "b", fault_rates="files.drop_after=1,jobs.500_after=1")
    with start_backend(settings, port=0) as rb, _client(rb) as c:
        with pytest.raises(APIConnectionError):
            c.files.upload(data / "train.jsonl")
        set_faults(rb, False)
        (stored,) = list(c.files.list())
        set_faults(rb, True)
        with pytest.raises(InternalServerError):
            c.jobs.create(
                JobCreateRequest(model="local:micro-chat", training_file=stored.id, hyperparameters=None)
            )
        view = server_view(rb, None)
        assert [f.id for f in view.training_files] == [stored.id] and len(view.jobs) == 1


@pytest.mark.integration
def test_client_repeats_reads_but_never_a_creating_post(tmp_path: Path) -> None:
    """Over real HTTP, every call faulted: a GET is sent 1 + max_retries times, a creating POST once."""
    spec = "jobs.503=1,files.429=1,responses.drop=1"
    settings = BackendSettings(data_dir=tmp_path / "b", fault_rates=spec, fault_retry_after_s=0.1)
    with start_backend(settings, port=0) as rb, _client(rb, max_retries=2) as c:
        with pytest.raises(InternalServerError):
            c.jobs.retrieve("ftjob-x")
        with pytest.raises(RateLimitError):
            c.files.retrieve("file-x")
        with pytest.raises(APIConnectionError):
            c.responses.create(
                ResponseCreateRequest(model="local:micro-chat", input="hi", max_output_tokens=2)
            )
        with pytest.raises(InternalServerError):
            c.jobs.create(
                JobCreateRequest(model="local:micro-chat", training_file="file-x", hyperparameters=None)
            )
        stats = fault_stats(rb)
    assert stats["injected"] == {"jobs": {"503": 4}, "files": {"429": 3}, "responses": {"drop": 1}}
