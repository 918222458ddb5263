"""Training-loop behaviour on local:micro-chat: learning, checkpoints, pause/resume, cancel, determinism."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from backend.trainer import train as train_module
from backend.trainer.device import describe, resolve_device
from backend.trainer.packing import PACKING_ENV
from backend.trainer.spec import TrainingError, TrainingSpec
from backend.trainer.train import train
from tests.trainer.helpers import Recorder, chat_rows, loss_tolerance, write_jsonl

SIX = (
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)


def _spec(train_file: Path, out: Path, **kw: object) -> TrainingSpec:
    base = TrainingSpec(
        job_id="ftjob_test",
        base_model="local:micro-chat",
        training_file=train_file,
        validation_file=None,
        output_dir=out,
        n_epochs=2,
        batch_size=4,
        metrics_every_n_steps=1,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_loss_decreases_and_succeeds(chat_file: Path, tmp_path: Path) -> None:
    rec = Recorder()
    out = train(_spec(chat_file, tmp_path / "job", n_epochs=3), rec)
    assert out.status == "succeeded"
    assert out.final_model_dir is not None and (out.final_model_dir / "ftpipe_model.json").is_file()
    losses = [loss for _, loss in rec.metric_losses()]
    assert len(losses) == 15  # 20 examples / batch 4 * 3 epochs, one metrics event per step
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
    assert out.trained_tokens > 0
    assert out.resolved_hyperparameters == {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0}
    started = next(d for m, _, _, d in rec.events if m == "Training started")
    assert started == {
        "n_examples": 20,
        "n_epochs": 3,
        "batch_size": 4,
        "lr": pytest.approx(3e-3),
        "total_steps": 15,
        "method": "supervised",
        "device": describe(resolve_device()),
    }


@pytest.mark.parametrize("with_validation", [True, False])
def test_every_checkpoint_has_six_float_metrics(
    chat_file: Path, valid_file: Path, tmp_path: Path, with_validation: bool
) -> None:
    rec = Recorder()
    spec = _spec(chat_file, tmp_path / "job", validation_file=valid_file if with_validation else None)
    train(spec, rec)
    assert [step for step, _, _ in rec.checkpoints] == [5, 10]
    for _, metrics, model_dir in rec.checkpoints:
        for key in SIX:
            assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
        assert (model_dir / "model.safetensors").is_file()
    if with_validation:
        # 6 validation examples < the 32-example sample, so the sample and the full set agree.
        _, m, _ = rec.checkpoints[-1]
        assert m["valid_loss"] == pytest.approx(m["full_valid_loss"])
        assert all("valid_loss" in d for _, _, t, d in rec.events if t == "metrics" and d)


def test_an_epoch_ending_at_a_metrics_step_reuses_its_validation_sample(
    chat_file: Path, valid_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same weights, the same sample: evaluated once, and the checkpoint and the event agree exactly."""
    calls: list[int] = []
    evaluate = train_module._Run.evaluate

    def counted(self: Any, examples: Any) -> tuple[float, float]:
        calls.append(len(examples))
        return evaluate(self, examples)

    monkeypatch.setattr(train_module._Run, "evaluate", counted)
    rec = Recorder()
    train(_spec(chat_file, tmp_path / "job", validation_file=valid_file), rec)  # metrics at every step
    events = {d["step"]: d for _, _, t, d in rec.events if t == "metrics" and d}
    assert len(events) == 10 and [step for step, _, _ in rec.checkpoints] == [5, 10]
    assert len(calls) == 10 + 2  # the sample at each step, the full set at each checkpoint: nothing twice
    for step, metrics, _ in rec.checkpoints:
        assert metrics["valid_loss"] == events[step]["valid_loss"]
        assert metrics["valid_mean_token_accuracy"] == events[step]["valid_mean_token_accuracy"]


def test_last_step_gets_a_metrics_event_with_its_window(chat_file: Path, tmp_path: Path) -> None:
    """15 steps with events every 10: points at 10 and 15 (the last), each averaging its own window."""
    per_step, sparse = Recorder(), Recorder()
    train(_spec(chat_file, tmp_path / "a", n_epochs=3), per_step)
    train(_spec(chat_file, tmp_path / "b", n_epochs=3, metrics_every_n_steps=10), sparse)
    points = [d for _, _, t, d in sparse.events if t == "metrics" and d]
    assert [d["step"] for d in points] == [10, 15]
    assert [d["epoch"] for d in points] == [2.0, 3.0]  # 5 steps per epoch
    assert all(d["total_steps"] == 15 and d["learning_rate"] > 0 for d in points)
    # The same seed trains the same steps, so each window's loss is its steps' losses averaged (weighted
    # by tokens, hence the tolerance; an epoch mean or a since-start mean would be far off).
    losses = dict(per_step.metric_losses())
    for d, window in ((points[0], range(1, 11)), (points[1], range(11, 16))):
        expected = sum(losses[s] for s in window) / len(window)
        assert d["train_loss"] == pytest.approx(expected, rel=0.02)
    capped = Recorder()
    train(_spec(chat_file, tmp_path / "c", n_epochs=3, metrics_every_n_steps=10, max_steps=7), capped)
    assert [step for step, _ in capped.metric_losses()] == [7]


def test_same_seed_same_losses_other_seed_differs(chat_file: Path, tmp_path: Path) -> None:
    runs = []
    for i, seed in enumerate([7, 7, 8]):
        rec = Recorder()
        train(_spec(chat_file, tmp_path / f"job{i}", seed=seed), rec)
        runs.append([loss for _, loss in rec.metric_losses()])
    if resolve_device().type == "cpu":
        assert runs[0] == runs[1]
    else:  # GPU kernels with atomics are not bit-reproducible
        assert runs[0] == pytest.approx(runs[1], abs=loss_tolerance())
    assert runs[0] != runs[2]


@pytest.mark.parametrize(("pause_after_steps", "packing"), [(3, "on"), (5, "on"), (7, "on"), (5, "off")])
def test_pause_then_resume_matches_uninterrupted(
    chat_file: Path, tmp_path: Path, pause_after_steps: int, packing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packed (the default) and padded batches both resume exactly where they paused."""
    monkeypatch.setenv(PACKING_ENV, packing)
    full = Recorder()
    train(_spec(chat_file, tmp_path / "full"), full)

    job = tmp_path / "paused"
    first = Recorder(decide=lambda n: "pause" if n > pause_after_steps else "continue")
    out1 = train(_spec(chat_file, job), first)
    assert out1.status == "paused" and out1.final_model_dir is None
    assert f"Paused at step {pause_after_steps}" in first.messages()

    second = Recorder()
    out2 = train(_spec(chat_file, job, resume=True), second)
    assert out2.status == "succeeded"
    assert f"Resumed from step {pause_after_steps}" in second.messages()

    combined = first.metric_losses() + second.metric_losses()
    expected = full.metric_losses()
    assert [s for s, _ in combined] == [s for s, _ in expected]
    for (_, a), (_, b) in zip(combined, expected, strict=True):
        assert abs(a - b) < loss_tolerance()
    ckpts = first.checkpoints + second.checkpoints
    assert [c[0] for c in ckpts] == [c[0] for c in full.checkpoints]
    for (_, m1, _), (_, m2, _) in zip(ckpts, full.checkpoints, strict=True):
        for key in SIX:
            assert abs(m1[key] - m2[key]) < loss_tolerance()
    assert out2.trained_tokens == train_tokens(full)


def train_tokens(rec: Recorder) -> int:
    done = next(d for m, _, _, d in rec.events if m.startswith("Training completed") and d)
    return int(done["trained_tokens"])


def test_resume_after_crash_uses_last_epoch_checkpoint(chat_file: Path, tmp_path: Path) -> None:
    full = Recorder()
    train(_spec(chat_file, tmp_path / "full"), full)

    def crash(n: int) -> str:
        if n > 7:  # mid second epoch, after the epoch-1 checkpoint
            raise RuntimeError("worker died")
        return "continue"

    job = tmp_path / "crashed"
    first = Recorder(decide=crash)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        train(_spec(chat_file, job), first)
    second = Recorder()
    train(_spec(chat_file, job, resume=True), second)
    assert "Resumed from step 5" in second.messages()
    resumed = second.metric_losses()
    expected = dict(full.metric_losses())
    assert [s for s, _ in resumed] == list(range(6, 11))
    for step, loss in resumed:
        assert abs(loss - expected[step]) < loss_tolerance()


def test_resume_without_state_starts_fresh(chat_file: Path, tmp_path: Path) -> None:
    rec = Recorder()
    out = train(_spec(chat_file, tmp_path / "job", resume=True), rec)
    assert out.status == "succeeded"
    assert "Training started" in rec.messages()


def test_cancel_returns_promptly(chat_file: Path, tmp_path: Path) -> None:
    rec = Recorder(decide=lambda n: "cancel" if n > 2 else "continue")
    out = train(_spec(chat_file, tmp_path / "job"), rec)
    assert out.status == "cancelled"
    assert out.final_model_dir is None
    assert rec.calls == 3  # polled before every step, stopped at the first "cancel"
    assert len(rec.metric_losses()) == 2
    assert not (tmp_path / "job" / "final").exists()


def test_malformed_line_reports_line_number(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", chat_rows(3))
    with path.open("a") as fh:
        fh.write("{not json\n")
    with pytest.raises(TrainingError) as err:
        train(_spec(path, tmp_path / "job"), Recorder())
    assert err.value.code == "invalid_training_file"
    assert "bad.jsonl:4" in err.value.message
    assert err.value.param == "training_file"


def test_unknown_base_model_is_a_training_error(chat_file: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError) as err:
        train(_spec(chat_file, tmp_path / "job", base_model="gpt-4o"), Recorder())
    assert err.value.code == "model_not_available" and err.value.param == "model"
