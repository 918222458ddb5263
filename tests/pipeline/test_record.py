"""RunRecord: result.json round-trips, and the flat tracker params carry the config that tells runs apart."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tasks.record import DatasetFile, MetricDefinition, RunRecord


def _record(**kw: object) -> RunRecord:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    base: dict[str, object] = {
        "job_id": "ftjob_1",
        "status": "succeeded",
        "base_model": "local:tiny-chat",
        "method": "supervised",
        "hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.0},
        "seed": 7,
        "suffix": "bot",
        "metadata": {"team": "support"},
        "idempotency_key": "k",
        "training": DatasetFile(
            role="training",
            path=Path("/d/train.jsonl"),
            sha256="ab" * 32,
            bytes=10,
            examples=300,
            file_id="f1",
        ),
        "started_at": now,
        "finished_at": now,
        "duration_s": 1.5,
        "final_metrics": {"train_loss": 1.25},
        "metric_definitions": {"train_loss": MetricDefinition(source="metrics_event", step=114, over="w")},
        "output_dir": Path("/runs/ftjob_1"),
    }
    return RunRecord.model_validate(base | kw)


def test_result_json_round_trips() -> None:
    record = _record(evaluation={"score": 0.8})
    assert RunRecord.model_validate_json(record.to_json()) == record


def test_params_are_flat_strings_with_the_config() -> None:
    params = _record().params()
    assert params["base_model"] == "local:tiny-chat" and params["seed"] == "7"
    assert params["n_epochs"] == "3" and params["learning_rate_multiplier"] == "1.0"
    assert params["training_sha256"] == "ab" * 32 and params["training_examples"] == "300"
    assert params["metadata.team"] == "support"
    assert "validation_file" not in params  # no validation file: no empty params
    assert "suffix" not in _record(suffix=None).params()


def test_uploads_reused_needs_every_file_reused() -> None:
    record = _record()
    assert not record.uploads_reused
    reused = record.training.model_copy(update={"reused": True})
    assert _record(training=reused).uploads_reused
