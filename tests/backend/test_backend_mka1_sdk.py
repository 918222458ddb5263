"""MKA1's official SDK (meetkai-mka1) drives the embedded backend through the fine-tuning guide's steps.

The SDK validates every answer against MKA1's own wire models, so a missing or mistyped field fails here.
One training job (the guide's, on the guide's own base model name) is shared by the module's tests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from backend_testkit import TERMINAL, wait_for, write_chat_jsonl
from meetkai_mka1 import SDK, models
from meetkai_mka1.errors import SDKDefaultError
from meetkai_mka1.utils import BackoffStrategy, RetryConfig

from backend.app import API_PREFIX
from backend.launcher import RunningBackend

pytestmark = pytest.mark.integration

GUIDE_MODEL = "meetkai:functionary-medium"  # the guide's example base; the test backend aliases it
OTHER_OWNER = {"X-On-Behalf-Of": "mka1-sdk-other-user"}


@pytest.fixture(scope="module")
def sdk(backend: RunningBackend) -> Iterator[SDK]:
    root = backend.base_url.removesuffix(API_PREFIX)
    no_retries = RetryConfig("none", BackoffStrategy(1, 1, 1, 1), False)
    with SDK(
        bearer_auth=backend.api_key.get_secret_value(),
        server_url=root,
        retry_config=no_retries,
        timeout_ms=120_000,
    ) as client:
        yield client


@dataclass(frozen=True)
class Guide:
    """What the guide's first steps produced."""

    train: models.File
    valid: models.File
    created: models.FineTuningJob
    paused: models.FineTuningJob
    done: models.FineTuningJob


def _status_in(sdk: SDK, job_id: str, statuses: set[str]) -> models.FineTuningJob:
    def check() -> models.FineTuningJob | None:
        job = sdk.llm.fine_tuning.retrieve(fine_tuning_job_id=job_id)
        return job if job.status in statuses else None

    found: models.FineTuningJob = wait_for(check, timeout=240)
    return found


def _upload(sdk: SDK, path: Path) -> models.File:
    return sdk.llm.files.upload(
        file={"file_name": path.name, "content": path.read_bytes(), "content_type": "application/jsonl"},
        purpose="fine-tune",
    )


@pytest.fixture(scope="module")
def guide(sdk: SDK, tmp_path_factory: pytest.TempPathFactory) -> Guide:
    """Steps 1-3: upload both files, create the job, pause it while it runs, resume it, wait for success."""
    data = tmp_path_factory.mktemp("mka1-guide")
    train = _upload(sdk, write_chat_jsonl(data / "train.jsonl", n=16))
    valid = _upload(sdk, write_chat_jsonl(data / "valid.jsonl", n=4))
    created = sdk.llm.fine_tuning.create(
        model=GUIDE_MODEL,
        training_file=train.id,
        validation_file=valid.id,
        suffix="guide",
        seed=42,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 4, "batch_size": 1}},
        },
        metadata={"guide": "mka1-sdk"},
    )
    _status_in(sdk, created.id, {"running"} | TERMINAL)
    wait_for(
        lambda: any(
            e.type == "metrics"
            for e in sdk.llm.fine_tuning.list_events(fine_tuning_job_id=created.id, limit=100).data
        ),
        timeout=240,
    )
    paused = sdk.llm.fine_tuning.pause(fine_tuning_job_id=created.id)
    if paused.status != "paused":
        paused = _status_in(sdk, created.id, {"paused"} | TERMINAL)
    resumed = sdk.llm.fine_tuning.resume(fine_tuning_job_id=created.id)
    assert resumed.status in {"queued", "running"}
    done = _status_in(sdk, created.id, TERMINAL)
    return Guide(train, valid, created, paused, done)


def test_files_carry_sha256_and_round_trip(sdk: SDK, guide: Guide, tmp_path: Path) -> None:
    path = write_chat_jsonl(tmp_path / "train.jsonl", n=16)
    local = hashlib.sha256(path.read_bytes()).hexdigest()
    assert guide.train.sha256 == local
    assert guide.train.bytes_ == path.stat().st_size and guide.train.filename == "train.jsonl"
    assert sdk.llm.files.get(file_id=guide.train.id).sha256 == local
    by_hash = sdk.llm.files.list(sha256=local, purpose="fine-tune")
    assert guide.train.id in [f.id for f in by_hash.data]
    assert guide.valid.id not in [f.id for f in by_hash.data]
    content = sdk.llm.files.content(file_id=guide.train.id)
    assert content.read() == path.read_bytes()
    page = sdk.llm.files.list(limit=1, order="asc")
    assert len(page.data) == 1 and page.has_more
    assert sdk.llm.files.list(limit=1, order="asc", after=page.data[0].id).data[0].id != page.data[0].id
    spare = _upload(sdk, path)
    deleted = sdk.llm.files.delete(file_id=spare.id)
    assert deleted.deleted and deleted.id == spare.id
    with pytest.raises(SDKDefaultError) as err:
        sdk.llm.files.get(file_id=spare.id)
    assert err.value.status_code == 404


def test_job_keeps_the_guide_model_and_names_the_local_one(sdk: SDK, guide: Guide) -> None:
    created, done = guide.created, guide.done
    assert created.status == "validating_files"
    assert (created.model, created.suffix, created.seed) == (GUIDE_MODEL, "guide", 42)
    assert created.metadata == {"guide": "mka1-sdk"}
    assert created.validation_file == guide.valid.id
    assert guide.paused.status == "paused"
    assert done.status == "succeeded", done.error
    assert done.model == GUIDE_MODEL and done.fine_tuned_model is not None
    assert done.fine_tuned_model.startswith(f"ft:{GUIDE_MODEL}:guide:")
    assert done.method is not None and done.method.type == "supervised"
    assert done.result_files and done.trained_tokens
    events = sdk.llm.fine_tuning.list_events(fine_tuning_job_id=done.id, limit=1000).data
    messages = [e.message for e in events]
    assert any("local:micro-chat" in m and GUIDE_MODEL in m for m in messages), messages
    assert any(m.startswith("Resumed from step") for m in messages)


def test_list_jobs_pages_newest_first(sdk: SDK, guide: Guide) -> None:
    newer = sdk.llm.fine_tuning.create(model="local:micro-chat", training_file=guide.train.id)
    sdk.llm.fine_tuning.cancel(fine_tuning_job_id=newer.id)
    first = sdk.llm.fine_tuning.list(limit=1)
    assert first.data[0].id == newer.id
    assert len(first.data) == 1 and first.has_more
    rest = sdk.llm.fine_tuning.list(limit=100, after=first.data[0].id)
    ids = [first.data[0].id, *(j.id for j in rest.data)]
    assert guide.created.id in ids and len(ids) == len(set(ids))
    created = [j.created_at for j in (*first.data, *rest.data)]
    assert created == sorted(created, reverse=True)


def test_events_and_checkpoints(sdk: SDK, guide: Guide) -> None:
    job_id = guide.done.id
    first = sdk.llm.fine_tuning.list_events(fine_tuning_job_id=job_id, limit=3)
    assert len(first.data) == 3 and first.has_more
    older = sdk.llm.fine_tuning.list_events(fine_tuning_job_id=job_id, limit=3, after=first.data[-1].id)
    assert {e.id for e in first.data}.isdisjoint(e.id for e in older.data)
    metrics = [
        e
        for e in sdk.llm.fine_tuning.list_events(fine_tuning_job_id=job_id, limit=1000).data
        if e.type == "metrics"
    ]
    assert metrics and all(isinstance(e.data, dict) and "train_loss" in e.data for e in metrics)
    checkpoints = sdk.llm.fine_tuning.list_checkpoints(fine_tuning_job_id=job_id, limit=100).data
    assert checkpoints
    for ck in checkpoints:
        assert ck.fine_tuning_job_id == job_id and ck.metrics.step == ck.step_number
        assert ck.metrics.valid_loss is not None  # the guide passed a validation file
    paged = sdk.llm.fine_tuning.list_checkpoints(fine_tuning_job_id=job_id, limit=1)
    assert paged.data[0].id == checkpoints[0].id and paged.has_more == (len(checkpoints) > 1)


def test_cancel_a_queued_job(sdk: SDK, guide: Guide) -> None:
    job = sdk.llm.fine_tuning.create(model="local:micro-chat", training_file=guide.train.id)
    cancelled = sdk.llm.fine_tuning.cancel(fine_tuning_job_id=job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(SDKDefaultError) as err:
        sdk.llm.fine_tuning.cancel(fine_tuning_job_id=job.id)
    assert err.value.status_code == 409


def test_responses_with_the_fine_tuned_model(sdk: SDK, guide: Guide) -> None:
    model = guide.done.fine_tuned_model
    assert model is not None
    resp = sdk.llm.responses.create(
        model=model,
        input="Say the color green.",
        instructions="Answer briefly.",
        max_output_tokens=12,
        metadata={"step": "responses"},
        user="guide-reader",
    )
    assert isinstance(resp, models.ResponseObject)
    assert resp.status in {"completed", "incomplete"} and resp.model == model
    assert resp.completed_at is not None and resp.background is False and resp.error is None
    assert resp.instructions == "Answer briefly." and resp.user == "guide-reader"
    assert resp.metadata == {"step": "responses"} and resp.tools == []
    (item,) = resp.output
    # The SDK's item union also matches its InputMessage model (tried first) for an assistant message.
    assert isinstance(item, models.OutputMessage | models.InputMessage)
    assert (item.type, item.role, item.status) == ("message", "assistant", resp.status)
    assert isinstance(item.content, list) and isinstance(item.content[0], models.OutputText)
    assert resp.output_text and item.content[0].text == resp.output_text
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    if resp.status == "incomplete":
        assert resp.incomplete_details is not None and resp.incomplete_details.reason == "max_output_tokens"

    got = sdk.llm.responses.get(response_id=resp.id)
    assert isinstance(got, models.ResponseObject) and got.output_text == resp.output_text
    items = sdk.llm.responses.list_input_items(response_id=resp.id)
    (message,) = items.data
    assert isinstance(message, models.InputMessage) and message.role == "user"
    follow = sdk.llm.responses.create(
        model=model, input="Again.", previous_response_id=resp.id, max_output_tokens=4
    )
    assert isinstance(follow, models.ResponseObject) and follow.previous_response_id == resp.id
    assert follow.usage.input_tokens > resp.usage.input_tokens  # the earlier turn was included
    with pytest.raises(SDKDefaultError) as err:
        sdk.llm.responses.cancel(response_id=resp.id)
    assert err.value.status_code == 409
    with pytest.raises(SDKDefaultError) as err:
        sdk.llm.responses.get(response_id=resp.id, http_headers=OTHER_OWNER)
    assert err.value.status_code == 404
    assert sdk.llm.responses.delete(response_id=resp.id).deleted
    with pytest.raises(SDKDefaultError) as err:
        sdk.llm.responses.get(response_id=resp.id)
    assert err.value.status_code == 404


def test_streamed_response_follows_the_event_protocol(sdk: SDK, guide: Guide) -> None:
    model = guide.done.fine_tuned_model
    assert model is not None
    stream = sdk.llm.responses.create(
        model=model, input="Say the color red.", max_output_tokens=16, stream=True
    )
    assert not isinstance(stream, models.ResponseObject)
    with stream:
        events = [e.data for e in stream]
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:-1] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert types[-1] in {"response.completed", "response.incomplete"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if isinstance(e, models.ResponseOutputTextDeltaEvent)]
    assert deltas and len(deltas) == types.count("response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert "".join(d.delta for d in deltas) == final.output_text
    assert events[-4].text == final.output_text  # type: ignore[union-attr]
    assert final.status == types[-1].removeprefix("response.")
    stored = sdk.llm.responses.get(response_id=final.id)
    assert isinstance(stored, models.ResponseObject) and stored.output_text == final.output_text


def test_checkpoint_models_answer_responses(sdk: SDK, guide: Guide) -> None:
    checkpoints = sdk.llm.fine_tuning.list_checkpoints(fine_tuning_job_id=guide.done.id, limit=100).data
    for ck in checkpoints:
        resp = sdk.llm.responses.create(model=ck.fine_tuned_model_checkpoint, input="Hi", max_output_tokens=4)
        assert isinstance(resp, models.ResponseObject) and resp.model == ck.fine_tuned_model_checkpoint


def test_models_list_and_get_are_owner_scoped(sdk: SDK, guide: Guide) -> None:
    fine_tuned = guide.done.fine_tuned_model
    assert fine_tuned is not None
    checkpoint_ids = {
        ck.fine_tuned_model_checkpoint
        for ck in sdk.llm.fine_tuning.list_checkpoints(fine_tuning_job_id=guide.done.id, limit=100).data
    }
    listed = {m.id: m for m in sdk.llm.models.list().data}
    assert {"local:tiny-chat", "local:micro-chat", GUIDE_MODEL, fine_tuned} <= set(listed)
    assert checkpoint_ids <= set(listed)
    assert listed[fine_tuned].base_model == GUIDE_MODEL and listed[fine_tuned].context_window
    assert listed["local:micro-chat"].model_type == "llm"
    got = sdk.llm.models.get(model_id=fine_tuned)
    assert got.id == fine_tuned and got.object == "model"
    assert sdk.llm.models.get(model_id=GUIDE_MODEL).base_model == "local:micro-chat"
    other = {m.id for m in sdk.llm.models.list(http_headers=OTHER_OWNER).data}
    assert "local:micro-chat" in other and fine_tuned not in other and not checkpoint_ids & other
    with pytest.raises(SDKDefaultError) as err:
        sdk.llm.models.get(model_id=fine_tuned, http_headers=OTHER_OWNER)
    assert err.value.status_code == 404


def test_unsupported_response_fields_are_named(sdk: SDK) -> None:
    with pytest.raises(SDKDefaultError) as err:
        sdk.llm.responses.create(model="local:micro-chat", input="hi", background=True)
    error: dict[str, Any] = json.loads(err.value.body)["error"]
    assert err.value.status_code == 400 and error["param"] == "background", error
    assert "not supported" in error["message"]
    with pytest.raises(SDKDefaultError) as err:
        sdk.llm.responses.create(model="local:micro-chat", input="hi", top_k=5)
    error = json.loads(err.value.body)["error"]
    assert err.value.status_code == 400 and error["param"] == "top_k", error
