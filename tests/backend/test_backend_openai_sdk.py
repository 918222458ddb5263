"""The official openai SDK against the local backend: files, jobs, events, checkpoints, pause/resume/cancel."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
from backend_testkit import TERMINAL, wait_for

from backend.launcher import RunningBackend
from tests.backend_workers import frozen_when

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sdk(backend: RunningBackend) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=backend.base_url, api_key=backend.api_key.get_secret_value(), max_retries=0, timeout=120
    )


def _status(sdk: openai.OpenAI, job_id: str, statuses: set[str]) -> Any:
    return wait_for(lambda: (j := sdk.fine_tuning.jobs.retrieve(job_id)).status in statuses and j)


def test_upload_list_retrieve(sdk: openai.OpenAI, train_file: Path) -> None:
    with train_file.open("rb") as fh:
        f = sdk.files.create(file=fh, purpose="fine-tune")
    assert f.id.startswith("file-") and f.bytes == train_file.stat().st_size and f.filename == "train.jsonl"
    assert f.status == "processed"
    assert any(x.id == f.id for x in sdk.files.list(purpose="fine-tune"))
    assert sdk.files.content(f.id).read() == train_file.read_bytes()


def test_pause_resume_to_success_then_responses(
    sdk: openai.OpenAI, backend: RunningBackend, train_file: Path
) -> None:
    with train_file.open("rb") as fh:
        f = sdk.files.create(file=fh, purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(
        model="local:micro-chat",
        training_file=f.id,
        suffix="sdk",
        metadata={"suite": "sdk"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 5, "batch_size": 1}}},
    )
    assert job.status == "validating_files"
    _status(sdk, job.id, {"running"})

    def events() -> list[Any]:
        return list(sdk.fine_tuning.jobs.list_events(job.id, limit=50))

    # Wait for some progress so the pause has a real step to stop at. The worker is held still until the
    # server has recorded the pause request, so the job cannot finish before it.
    with ThreadPoolExecutor(1) as pool:
        with frozen_when(backend, lambda: any(e.type == "metrics" for e in events())):
            pausing = pool.submit(sdk.fine_tuning.jobs.pause, job.id)  # answers once the worker stopped
            wait_for(lambda: any(e.message.startswith("Pause requested") for e in events()))
        paused = pausing.result()
    if paused.status != "paused":
        paused = _status(sdk, job.id, {"paused"} | TERMINAL)
    assert paused.status == "paused"
    with pytest.raises(openai.ConflictError):
        sdk.fine_tuning.jobs.pause(job.id)
    resumed = sdk.fine_tuning.jobs.resume(job.id)
    assert resumed.status in {"queued", "running"}
    with pytest.raises(openai.ConflictError):
        sdk.fine_tuning.jobs.resume(job.id)
    done = _status(sdk, job.id, TERMINAL)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in sdk.fine_tuning.jobs.list_events(job.id, limit=1000)]
    assert any("paused" in m.lower() for m in messages)
    assert any(m.startswith("Resumed from step") for m in messages)  # the trainer continued, not restarted
    checkpoints = list(sdk.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints and all(c.metrics.train_loss is not None for c in checkpoints)
    assert [j.id for j in sdk.fine_tuning.jobs.list(metadata={"suite": "sdk"})] == [job.id]
    assert done.fine_tuned_model is not None
    resp = sdk.responses.create(
        model=done.fine_tuned_model, input="Say the color green.", max_output_tokens=12
    )
    assert resp.output_text.strip()
    assert resp.usage is not None and resp.usage.output_tokens > 0


def test_cancel_running_job(sdk: openai.OpenAI, backend: RunningBackend, train_file: Path) -> None:
    with train_file.open("rb") as fh:
        f = sdk.files.create(file=fh, purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(
        model="local:micro-chat", training_file=f.id, hyperparameters={"n_epochs": 30, "batch_size": 1}
    )
    # the worker is held still until the cancel landed, so the job cannot finish first
    with frozen_when(backend, lambda: sdk.fine_tuning.jobs.retrieve(job.id).status == "running"):
        cancelled = sdk.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(openai.ConflictError):
        sdk.fine_tuning.jobs.cancel(job.id)
    # the worker stops without writing anything more: the API's cancellation event stays the last one
    time.sleep(1.0)
    assert sdk.fine_tuning.jobs.list_events(job.id, limit=1).data[0].message == "Fine-tuning job cancelled"
    assert sdk.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_event_pagination_newest_first(sdk: openai.OpenAI, trained_job: dict[str, Any]) -> None:
    first = sdk.fine_tuning.jobs.list_events(trained_job["id"], limit=3)
    assert len(first.data) == 3 and first.has_more
    older = sdk.fine_tuning.jobs.list_events(trained_job["id"], limit=3, after=first.data[-1].id)
    assert older.data[0].created_at <= first.data[-1].created_at
    all_ids = [e.id for e in sdk.fine_tuning.jobs.list_events(trained_job["id"], limit=1000)]
    assert all_ids[:6] == [e.id for e in first.data] + [e.id for e in older.data]


def test_streaming_yields_text_deltas_and_a_completed_event(
    sdk: openai.OpenAI, fluent_job: dict[str, Any]
) -> None:
    model = fluent_job["fine_tuned_model"]
    events = list(
        sdk.responses.create(model=model, input="Say the color blue.", max_output_tokens=64, stream=True)
    )
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas and events[-1].type == "response.completed"
    assert "".join(deltas) == events[-1].response.output_text
    # The SDK's accumulating helper checks item identities and indexes across the whole stream.
    with sdk.responses.stream(model=model, input="Say the color red.", max_output_tokens=64) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text and final.output_text == text and final.status == "completed"
    assert sdk.responses.retrieve(final.id).output_text == text
    (item,) = sdk.responses.input_items.list(final.id).data
    assert item.type == "message" and item.role == "user"
    sdk.responses.delete(final.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(final.id)
