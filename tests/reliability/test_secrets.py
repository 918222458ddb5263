"""The API key never leaves the process: a whole run (and a failing one) against a backend whose key is a
recognisable canary, then every place a key could leak is read back and searched."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler
from pydantic import SecretStr

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from flows.fine_tune import fine_tune
from tests.reliability.reliability_kit import client_for, flow_params, small_dataset

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
CANARY = "sk-ftpipe-CANARY-7f3a9c"
USER = "secrets-user"


@pytest.fixture(scope="module")
def canary_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """A backend whose key is the canary."""
    settings = BackendSettings(data_dir=tmp_path_factory.mktemp("canary-backend"), api_key=SecretStr(CANARY))
    with start_backend(settings, port=0) as rb:
        yield rb


async def _read_back(flow_run_id: UUID) -> list[tuple[str, str]]:
    """(where, text) for the flow run, its task runs, logs and artifacts as stored by the Prefect API."""
    out: list[tuple[str, str]] = []
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        out.append(("flow run (parameters, state)", run.model_dump_json()))
        for tr in await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        ):
            out.append((f"task run {tr.name}", tr.model_dump_json()))
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        out.append((f"{len(logs)} Prefect run logs", "\n".join(log.model_dump_json() for log in logs)))
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        out.append((f"{len(arts)} artifacts", "\n".join(a.model_dump_json() for a in arts)))
    assert logs and arts, out  # the read-back really found something to search
    return out


def _files(root: Path) -> list[tuple[str, str]]:
    """Every file under ``root``, bytes decoded leniently (binary included)."""
    return [(str(p), p.read_bytes().decode("latin-1")) for p in sorted(root.rglob("*")) if p.is_file()]


def _events(rb: RunningBackend) -> list[tuple[str, str]]:
    with client_for(rb, USER) as c:
        return [
            (
                f"events of {job.id}",
                "\n".join(e.model_dump_json() for e in c.jobs.list_events(job.id, limit=10000).data),
            )
            for job in c.jobs.list()
        ]


def test_key_never_leaks(
    canary_backend: RunningBackend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MKA1_API_KEY", CANARY)
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "prefect", "backend", "ftpipe"):
        caplog.set_level(logging.DEBUG, logger=name)
    data = small_dataset(tmp_path / "ds")
    ok = fine_tune(
        **flow_params(data, tmp_path / "ok", canary_backend, USER).flow_arguments(), return_state=True
    )
    result = ok.result()
    assert result.status == "succeeded"

    # A run that fails on the server: the base model directory is not a model.
    empty_model = tmp_path / "not-a-model"
    empty_model.mkdir()
    bad_params = flow_params(data, tmp_path / "bad", canary_backend, USER).model_copy(
        update={"model": f"local:{empty_model}", "smoke_prompts": []}
    )
    failed = fine_tune(**bad_params.flow_arguments(), return_state=True)
    assert failed.is_failed()
    with pytest.raises(Exception) as info:
        failed.result()
    APILogHandler().flush()  # push batched run logs to the API before reading them back

    places: list[tuple[str, str]] = [
        (
            "captured log records",
            "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        ),
        ("captured log text", caplog.text),
        ("flow result", result.model_dump_json() + repr(result)),
        ("failure exception", f"{info.value!r} {info.value} {info.getrepr()}"),
        ("failed state", repr(failed) + str(failed.message)),
    ]
    assert any("httpx" in r.name or "httpcore" in r.name for r in caplog.records)  # DEBUG really captured
    for state in (ok, failed):
        assert state.state_details.flow_run_id is not None
        places += asyncio.run(_read_back(state.state_details.flow_run_id))
    places += _events(canary_backend)
    places += _files(tmp_path / "ok") + _files(tmp_path / "bad")
    places += _files(canary_backend.data_dir / "logs")
    leaks = [where for where, text in places if CANARY in text]
    assert leaks == [], f"API key found in: {leaks}"
    assert len(places) > 10
