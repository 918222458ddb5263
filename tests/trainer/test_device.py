"""Device selection ($FTPIPE_TRAINER_DEVICE), CPU-loadable training state, and the CUDA-path helpers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from backend.trainer import device as device_mod
from backend.trainer.data import IGNORE, SFTExample, collate
from backend.trainer.device import (
    DEVICE_ENV,
    PRECISION_ENV,
    autocast,
    cpu_bf16,
    resolve_device,
    restore_rng_state,
    rng_state,
    to_cpu,
    to_device,
)
from backend.trainer.generate import Generator
from backend.trainer.losses import selection_indices
from backend.trainer.modeling import load_for_inference
from backend.trainer.spec import TrainingError, TrainingSpec
from backend.trainer.state import STATE_DIR, load_latest_state
from backend.trainer.train import train
from tests.trainer.helpers import Recorder

HAS_CUDA = torch.cuda.is_available()


def _fake(available: bool, count: int = 1) -> dict[str, Any]:
    return {"cuda_available": lambda: available, "cuda_count": lambda: count}


@pytest.mark.parametrize(
    ("value", "available", "count", "expected"),
    [
        ("auto", False, 0, "cpu"),
        ("", False, 0, "cpu"),
        ("  AUTO ", True, 2, "cuda:0"),
        ("auto", True, 1, "cuda:0"),
        ("cpu", True, 1, "cpu"),
        ("CPU", False, 0, "cpu"),
        ("cuda", True, 1, "cuda:0"),
        ("cuda:1", True, 2, "cuda:1"),
    ],
)
def test_resolve_device_values(value: str, available: bool, count: int, expected: str) -> None:
    assert resolve_device(value, **_fake(available, count)) == torch.device(expected)


@pytest.mark.parametrize(
    ("value", "available", "count", "code"),
    [
        ("cuda", False, 0, "device_not_available"),
        ("cuda:0", False, 0, "device_not_available"),
        ("cuda:2", True, 2, "device_not_available"),
        ("tpu", True, 1, "invalid_device"),
        ("cuda:x", True, 1, "invalid_device"),
        ("cuda:-1", True, 1, "invalid_device"),
    ],
)
def test_resolve_device_errors(value: str, available: bool, count: int, code: str) -> None:
    with pytest.raises(TrainingError) as err:
        resolve_device(value, **_fake(available, count))
    assert err.value.code == code
    assert DEVICE_ENV in err.value.message


def test_resolve_device_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert resolve_device(**_fake(True, 1)) == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV, "cuda:1")
    assert resolve_device(**_fake(True, 2)) == torch.device("cuda", 1)
    monkeypatch.delenv(DEVICE_ENV)
    assert resolve_device(**_fake(False)) == torch.device("cpu")
    assert resolve_device(**_fake(True)) == torch.device("cuda", 0)


@pytest.mark.skipif(HAS_CUDA, reason="needs a machine without CUDA")
def test_explicit_cuda_without_cuda_is_a_training_error(
    chat_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    spec = TrainingSpec("ftjob_dev", "local:micro-chat", chat_file, None, tmp_path / "job", n_epochs=1)
    with pytest.raises(TrainingError) as err:
        train(spec, Recorder())
    assert err.value.code == "device_not_available"
    with pytest.raises(TrainingError) as gen_err:
        Generator()
    assert gen_err.value.code == "device_not_available"


@pytest.mark.parametrize(
    ("env", "units", "expected"),
    [
        ("", True, True),  # auto: a CPU with bf16 units
        ("auto", False, False),  # no units: bf16 would be emulated, no faster
        ("fp32", True, False),
        ("bf16", False, True),
    ],
)
def test_cpu_precision_rule(monkeypatch: pytest.MonkeyPatch, env: str, units: bool, expected: bool) -> None:
    monkeypatch.setenv(PRECISION_ENV, env)
    monkeypatch.setattr(device_mod, "cpu_has_bf16_units", lambda: units)
    assert cpu_bf16(torch.device("cpu")) is expected
    assert cpu_bf16(torch.device("cuda", 0)) is False  # CUDA always autocasts, see autocast()
    monkeypatch.setenv(PRECISION_ENV, "fp16")
    with pytest.raises(TrainingError, match=PRECISION_ENV):
        cpu_bf16(torch.device("cpu"))


def test_cpu_helpers_leave_tensors_alone() -> None:
    cpu = torch.device("cpu")
    t = torch.arange(4)
    assert to_device(t, cpu) is t
    with autocast(cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    nested = {"a": [t, (t, 3)], "b": "x"}
    out = to_cpu(nested)
    assert out["b"] == "x" and out["a"][1][1] == 3 and isinstance(out["a"][1], tuple)
    assert torch.equal(out["a"][0], t)


def test_rng_state_round_trip_ignores_a_cuda_state_on_cpu() -> None:
    cpu = torch.device("cpu")
    saved = rng_state(cpu)
    assert set(saved) == {"rng"}
    first = torch.rand(3)
    torch.rand(5)
    # A state written on a GPU machine carries a CUDA RNG state too; on CPU it is ignored.
    restore_rng_state({**saved, "cuda_rng": torch.zeros(16, dtype=torch.uint8)}, cpu)
    assert torch.equal(torch.rand(3), first)


def test_selection_indices_match_boolean_mask_selection() -> None:
    seqs = [
        SFTExample([1, 2, 3, 4, 5], [0, 0, 1, 1, 1]),
        SFTExample([6, 7, 8], [0, 1, 1]),
        SFTExample([9, 10, 11, 12], [0, 0, 0, 1]),
    ]
    batch = collate(seqs, pad_id=0)
    hidden = torch.randn(batch.labels.shape[0], batch.labels.shape[1], 5)
    select = batch.labels[:, 1:] != IGNORE
    rows, flat, targets = selection_indices(batch.labels)
    assert torch.equal(hidden.reshape(-1, 5).index_select(0, flat), hidden[:, :-1][select])
    assert torch.equal(targets, batch.labels[:, 1:][select])
    assert rows.tolist() == [0, 0, 0, 1, 1, 2]


def test_saved_state_and_checkpoints_load_on_cpu(chat_file: Path, tmp_path: Path) -> None:
    """Runs on whatever device the environment picks; everything written must load without a GPU."""
    job = tmp_path / "job"
    rec = Recorder(decide=lambda n: "pause" if n > 6 else "continue")
    spec = TrainingSpec("ftjob_dev", "local:micro-chat", chat_file, None, job, n_epochs=2, batch_size=4)
    assert train(spec, rec).status == "paused"
    state_file = next((job / STATE_DIR).glob("state-*.pt"))
    # No map_location: a tensor left on a GPU would fail to load (or land on the GPU) here.
    raw = torch.load(state_file, weights_only=True)
    tensors: list[torch.Tensor] = []

    def collect(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            tensors.append(obj)
        elif isinstance(obj, dict):
            for v in obj.values():
                collect(v)
        elif isinstance(obj, list | tuple):
            for v in obj:
                collect(v)

    collect(raw)
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    assert raw["optimizer"]["state"], "optimizer moments are part of the resumable state"
    found = load_latest_state(job)
    assert found is not None and found[1].step == 6
    _, _, ckpt_dir = rec.checkpoints[0]
    model, _, _ = load_for_inference(ckpt_dir)
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_resume_on_cpu_from_a_state_with_cuda_extras(
    chat_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state as written on a GPU (CUDA RNG state, fused-AdamW flag) resumes exactly on a CPU-only run."""
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    spec = TrainingSpec(
        "ftjob_dev", "local:micro-chat", chat_file, None, tmp_path / "full", n_epochs=2, batch_size=4
    )
    spec = replace(spec, metrics_every_n_steps=1)
    full = Recorder()
    train(spec, full)
    job = replace(spec, output_dir=tmp_path / "job")
    first = Recorder(decide=lambda n: "pause" if n > 3 else "continue")
    assert train(job, first).status == "paused"
    state_file = next((job.output_dir / STATE_DIR).glob("state-*.pt"))
    payload = torch.load(state_file, weights_only=True)
    payload["cuda_rng"] = torch.zeros(16, dtype=torch.uint8)
    for group in payload["optimizer"]["param_groups"]:
        group["fused"] = True
    torch.save(payload, state_file)
    rec = Recorder()
    out = train(replace(job, resume=True), rec)
    assert out.status == "succeeded" and "Resumed from step 3" in rec.messages()
    combined = first.metric_losses() + rec.metric_losses()
    assert [s for s, _ in combined] == [s for s, _ in full.metric_losses()]
    for (_, a), (_, b) in zip(combined, full.metric_losses(), strict=True):
        assert abs(a - b) < 1e-6


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_run_matches_cpu_run_within_tolerance_and_resumes_on_cpu(
    chat_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = TrainingSpec(
        "ftjob_dev", "local:micro-chat", chat_file, None, tmp_path / "cpu", n_epochs=2, batch_size=4
    )
    spec = replace(spec, metrics_every_n_steps=1)
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    cpu = Recorder()
    train(spec, cpu)
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    gpu = Recorder()
    train(replace(spec, output_dir=tmp_path / "gpu"), gpu)
    started = next(d for m, _, _, d in gpu.events if m == "Training started" and d)
    assert str(started["device"]).startswith("cuda:0")
    cpu_losses = [loss for _, loss in cpu.metric_losses()]
    gpu_losses = [loss for _, loss in gpu.metric_losses()]
    assert gpu_losses == pytest.approx(cpu_losses, abs=5e-2)
    # Pause on the GPU, resume on the CPU: the state must carry over.
    job = tmp_path / "moved"
    paused = train(replace(spec, output_dir=job), Recorder(decide=lambda n: "pause" if n > 4 else "continue"))
    assert paused.status == "paused"
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    rec = Recorder()
    assert train(replace(spec, output_dir=job, resume=True), rec).status == "succeeded"
    resumed = dict(rec.metric_losses())
    for step, loss in cpu.metric_losses():
        if step in resumed:
            assert resumed[step] == pytest.approx(loss, abs=5e-2)
