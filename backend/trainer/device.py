"""Which device the trainer runs on ($FTPIPE_TRAINER_DEVICE), and the few device-specific helpers it needs.

On CUDA the forward pass runs under bf16 autocast over fp32 master weights; losses and metrics are fp32. On a
CPU with bf16 matrix units (AMX) training does the same ($FTPIPE_TRAINER_PRECISION), except that attention runs
in fp32 there; elsewhere the CPU stays fp32.
Everything that reaches disk is moved to the CPU first, so states and checkpoints load anywhere.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from backend.trainer.spec import TrainingError

DEVICE_ENV = "FTPIPE_TRAINER_DEVICE"
PRECISION_ENV = "FTPIPE_TRAINER_PRECISION"
_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(
    value: str | None = None,
    *,
    cuda_available: Callable[[], bool] = torch.cuda.is_available,
    cuda_count: Callable[[], int] = torch.cuda.device_count,
) -> torch.device:
    """Parse `value` (default: $FTPIPE_TRAINER_DEVICE): auto (cuda when available, else cpu), cpu, cuda, cuda:N.

    Raises TrainingError for an unknown value or a CUDA device this machine does not have.
    """
    raw = os.environ.get(DEVICE_ENV, "") if value is None else value
    choice = raw.strip().lower() or "auto"
    if choice == "auto":
        return torch.device("cuda", 0) if cuda_available() else torch.device("cpu")
    if choice == "cpu":
        return torch.device("cpu")
    match = _CUDA_RE.match(choice)
    if match is None:
        raise TrainingError(
            "invalid_device",
            f"{DEVICE_ENV}={raw!r} is not one of auto, cpu, cuda, cuda:N",
            None,
        )
    index = int(match.group(1) or 0)
    if not cuda_available():
        raise TrainingError(
            "device_not_available",
            f"{DEVICE_ENV}={raw!r} asks for CUDA, but torch {torch.__version__} sees no CUDA device",
            None,
        )
    count = cuda_count()
    if index >= count:
        raise TrainingError(
            "device_not_available",
            f"{DEVICE_ENV}={raw!r}: this machine has {count} CUDA device(s)",
            None,
        )
    return torch.device("cuda", index)


def prepare_device(device: torch.device) -> None:
    """Per-process backend switches for `device` (TF32 matmuls on CUDA: fp32 weights, tensor-core speed)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def describe(device: torch.device) -> str:
    """A human-readable device name, e.g. 'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; nothing on CPU (the CPU uses cpu_autocast, where cpu_bf16 says so)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@functools.cache
def cpu_has_bf16_units() -> bool:
    """True where the CPU multiplies bf16 matrices in hardware (AMX): there bf16 matmuls run about twice as
    fast as fp32 ones (measured on a 0.5B LoRA step); without it bf16 is emulated and no faster."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def cpu_bf16(device: torch.device) -> bool:
    """Whether CPU training runs under bf16 autocast (matrix products in bf16 over fp32 master weights, a LoRA
    model's frozen base stored in bf16): $FTPIPE_TRAINER_PRECISION auto (default: on a CPU with bf16 units;
    tiny-chat's linear layers run 2-4x faster there), bf16 or fp32."""
    if device.type != "cpu":
        return False
    value = os.environ.get(PRECISION_ENV, "").strip().lower() or "auto"
    if value not in ("auto", "bf16", "fp32"):
        raise TrainingError(
            "invalid_device", f"{PRECISION_ENV}={value!r} is not one of auto, bf16, fp32", None
        )
    if value == "auto":
        return cpu_has_bf16_units()
    return value == "bf16"


def cpu_autocast(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on the CPU when `enabled`, else nothing."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a CPU tensor to `device`; to CUDA via pinned memory without blocking the host."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def to_cpu(obj: Any) -> Any:
    """A copy of a (nested dict/list/tuple of) tensors with every tensor on the CPU, for saving."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG states that matter on `device` (CPU always, plus the CUDA device's), as CPU tensors."""
    state = {"rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(payload: dict[str, Any], device: torch.device) -> None:
    """Inverse of `rng_state`; a CUDA state is ignored on CPU and absent from CPU-written states."""
    torch.set_rng_state(payload["rng"])
    if device.type == "cuda" and "cuda_rng" in payload:
        torch.cuda.set_rng_state(payload["cuda_rng"], device)
