"""The sweep's inputs: configs, grids and the ``fine-tune-sweep`` flow's parameters (no Prefect, no pandas).

Configs override fields of the base ``fine-tune`` parameters with the contract's own hyperparameter types,
so a config that could not be sent is refused when the sweep file is read.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contract.hyperparameters import BatchSize, LearningRateMultiplier, NEpochs, Seed
from contract.wire import MAX_SUFFIX_CHARS, CheckpointMetric
from flows.params import FineTuneParams, FlowParameters

DASK_ADDRESS_ENV = "FTPIPE_DASK_ADDRESS"
SWEEP_KEY, CONFIG_KEY = "ftpipe_sweep", "ftpipe_sweep_config"
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
SelectMetric = CheckpointMetric
# The fine-tune parameters a config may override (also the comparison's config columns after ``name``).
OVERRIDABLE = (
    "model",
    "n_epochs",
    "learning_rate_multiplier",
    "batch_size",
    "seed",
    "suffix",
)


class SweepConfig(BaseModel):
    """One point of the sweep; unset fields keep the base parameters' values."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None,
        max_length=64,
        description="Label (default: built from the values)",
    )
    model: str | None = Field(default=None, min_length=1, description="Base model id")
    n_epochs: NEpochs | None = None
    learning_rate_multiplier: LearningRateMultiplier | None = None
    batch_size: BatchSize | None = None
    seed: Seed | None = None
    suffix: str | None = Field(default=None, max_length=MAX_SUFFIX_CHARS)


class SweepGrid(BaseModel):
    """Cartesian product of the listed values (an empty list keeps the base value)."""

    model_config = ConfigDict(extra="forbid")

    model: list[str] = Field(default_factory=list)
    n_epochs: list[NEpochs] = Field(default_factory=list)
    learning_rate_multiplier: list[LearningRateMultiplier] = Field(default_factory=list)
    batch_size: list[BatchSize] = Field(default_factory=list)
    seed: list[Seed] = Field(default_factory=list)
    suffix: list[str] = Field(default_factory=list)

    def expand(self) -> list[SweepConfig]:
        """One config per combination, in a stable order."""
        axes = {k: v for k, v in self.model_dump().items() if v}
        if not axes:
            return []
        keys = list(axes)
        return [
            SweepConfig(**dict(zip(keys, combo, strict=True))) for combo in itertools.product(*axes.values())
        ]


class SweepParams(FlowParameters):
    """Inputs of the ``fine-tune-sweep`` flow; each field is one top-level flow parameter."""

    flow_name: ClassVar[str] = "fine-tune-sweep"
    model_config = ConfigDict(extra="forbid")

    base: FineTuneParams = Field(description="fine-tune parameters every config starts from")
    configs: list[SweepConfig] = Field(default_factory=list, description="Explicit configs")
    grid: SweepGrid | None = Field(default=None, description="Grid added after the explicit configs")
    name: str | None = Field(default=None, description="Sweep label (default: the flow run name)")
    max_concurrency: int = Field(default=2, ge=1, le=64, description="Configs training at the same time")
    task_runner: Literal["thread", "dask"] = Field(default="thread", description="Where config tasks run")
    dask_address: str | None = Field(
        default=None,
        description=f"Dask scheduler address (default ${DASK_ADDRESS_ENV}, else a LocalCluster)",
    )
    dask_processes: bool = Field(default=True, description="LocalCluster workers as processes (else threads)")
    deployment: str | None = Field(
        default=None,
        description="Run configs as runs of this deployment ('fine-tune/<name>') on its pool",
    )
    deployment_timeout_s: float = Field(default=7200.0, gt=0, description="Wait this long per deployment run")
    concurrency_limit: str | None = Field(
        default=None,
        description="Prefect global concurrency limit each config occupies (must exist)",
    )
    select_by: SelectMetric = Field(
        default="full_valid_loss", description="Metric that picks the best config"
    )
    select_mode: Literal["min", "max"] = Field(
        default="min", description="Whether the lowest or highest wins"
    )
    output_dir: Path | None = Field(default=None, description="Comparison files (default runs/sweep-<name>)")

    @model_validator(mode="after")
    def _need_configs(self) -> SweepParams:
        if not self.configs and (self.grid is None or not self.grid.expand()):
            raise ValueError("give configs or a non-empty grid")
        return self

    def all_configs(self) -> list[SweepConfig]:
        """Explicit configs then the grid, each with a unique name."""
        configs = [*self.configs, *(self.grid.expand() if self.grid else [])]
        seen: set[str] = set()
        named = []
        for i, cfg in enumerate(configs):
            name = cfg.name or _default_name(i, cfg)
            while name in seen:
                name = f"{name}-{i}"
            seen.add(name)
            named.append(cfg.model_copy(update={"name": name}))
        return named


def _default_name(index: int, cfg: SweepConfig) -> str:
    short = {
        "model": "",
        "n_epochs": "e",
        "learning_rate_multiplier": "lr",
        "batch_size": "bs",
        "seed": "s",
    }
    parts = [f"{index:02d}"]
    for key, prefix in short.items():
        value = getattr(cfg, key)
        if value is not None:
            text = str(value).removeprefix("local:") if key == "model" else str(value)
            parts.append(prefix + text)
    return _NAME_BAD.sub("-", "-".join(parts))[:64]


def child_params(base: FineTuneParams, cfg: SweepConfig, output_dir: Path, sweep_name: str) -> FineTuneParams:
    """The config's ``fine-tune`` parameters (re-validated, so a bad combination fails here)."""
    data = base.model_dump()
    data.update({key: getattr(cfg, key) for key in OVERRIDABLE if getattr(cfg, key) is not None})
    data["output_dir"] = output_dir / str(cfg.name)
    data["metadata"] = {
        **base.metadata,
        SWEEP_KEY: sweep_name[:512],
        CONFIG_KEY: str(cfg.name),
    }
    return FineTuneParams.model_validate(data)


def load_sweep_file(path: Path) -> SweepParams:
    """SweepParams from a YAML or JSON file; relative dataset paths resolve against the file's folder."""
    import yaml

    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    base = data.get("base")
    if not isinstance(base, dict):
        return SweepParams.model_validate(data)  # reports the missing or malformed base
    for key in ("dataset_dir", "train_file", "validation_file", "smoke_file"):
        if isinstance(base.get(key), str) and not Path(base[key]).is_absolute():
            base[key] = str((path.parent / base[key]).resolve())
    return SweepParams.model_validate(data)
