"""Task runs of ``fine-tune`` take concurrency slots only when a limit is set on the run's tags (fake API)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import prefect.concurrency._sync as concurrency_sync
import pytest
from prefect import tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from flows.backend_runtime import use_connection
from flows.fine_tune import fine_tune
from tests.pipeline.fake_api import FakeMKA1
from tests.pipeline.flow_params import micro_chat_params

pytestmark = pytest.mark.usefixtures("prefect_harness")
TAGS = ("ftpipe-test:untagged-a", "ftpipe-test:untagged-b")


def _params(dataset_dir: Path, tmp_path: Path) -> dict[str, Any]:
    return micro_chat_params(dataset_dir, tmp_path, evaluate=False).flow_arguments()


async def _flow_run_tags(flow_run_id: Any) -> list[str]:
    async with get_client() as client:
        return (await client.read_flow_run(flow_run_id)).tags


async def _set_limit(name: str) -> None:
    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=100))


async def _drop_limit(name: str) -> None:
    async with get_client() as client:
        await client.delete_global_concurrency_limit_by_name(name)


def test_task_runs_ask_for_slots_only_when_a_limit_is_set_on_a_tag(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[list[str]] = []
    real = concurrency_sync.acquire_concurrency_slots_with_lease

    def spy(names: list[str], *args: Any, **kwargs: Any) -> Any:
        asked.append(list(names))
        return real(names, *args, **kwargs)

    monkeypatch.setattr(concurrency_sync, "acquire_concurrency_slots_with_lease", spy)
    with use_connection(fake.connection()), tags(*TAGS):
        record = fine_tune(**_params(dataset_dir, tmp_path))
    # No limit on the tags: no task run asked (each ask is a write that races the run's logs on SQLite).
    assert asked == []
    assert set(TAGS) <= set(asyncio.run(_flow_run_tags(record.flow_run_id)))  # the run keeps its tags

    asyncio.run(_set_limit(f"tag:{TAGS[1]}"))
    try:
        with use_connection(fake.connection()), tags(*TAGS):
            fine_tune(**_params(dataset_dir, tmp_path))
    finally:
        asyncio.run(_drop_limit(f"tag:{TAGS[1]}"))
    # A limit on one of them: every task run carries the tags again and takes its slot.
    assert asked and all(f"tag:{TAGS[1]}" in names for names in asked)
