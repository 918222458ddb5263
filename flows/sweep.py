"""The ``fine-tune-sweep`` flow: run ``fine-tune`` once per config, concurrently, and compare the results.

Each config becomes one ``sweep-config`` task that starts a ``fine-tune`` subflow run (or, with
``deployment`` set, a run of that deployment on a work pool), so every config is its own flow run in the UI.
Concurrency comes from the task runner (a thread pool or Dask) plus optional limits; one failed config is
reported in the comparison instead of failing the sweep.
"""

# No ``from __future__ import annotations``: a served/pickled flow resolves its parameter annotations from
# the function object alone (Prefect's Runner cloudpickles it into a subprocess), so they must be real types.
import itertools
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.runtime import flow_run as current_flow_run
from prefect.states import State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from client import MKA1Client
from contract.hyperparameters import BatchSize, LearningRateMultiplier, NEpochs, Seed
from contract.wire import MAX_SUFFIX_CHARS
from estimate.budget import Budget
from estimate.core import JobInputs
from flows.backend_runtime import Connection, open_connection, use_connection
from flows.fine_tune import fine_tune
from flows.params import FineTuneParams
from flows.sweep_report import (
    FAILED,
    METRIC_COLUMNS,
    SUCCEEDED,
    SweepRow,
    comparison_frame,
    comparison_png,
    pick_best,
    publish_artifacts,
    table_rows,
    write_outputs,
)
from tasks import runtime
from tasks.estimate import estimate_sweep_task
from tasks.record import RunRecord

DASK_ADDRESS_ENV = "FTPIPE_DASK_ADDRESS"
SWEEP_KEY, CONFIG_KEY = "ftpipe_sweep", "ftpipe_sweep_config"
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
SelectMetric = Literal[
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
]


# The fine-tune parameters a config may override (also the comparison's config columns after ``name``).
OVERRIDABLE = ("model", "n_epochs", "learning_rate_multiplier", "batch_size", "seed", "suffix")


class SweepConfig(BaseModel):
    """One point of the sweep; unset fields keep the base parameters' values."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None, max_length=64, description="Label (default: built from the values)"
    )
    model: str | None = Field(default=None, description="Base model id")
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


class SweepParams(BaseModel):
    """Inputs of the ``fine-tune-sweep`` flow."""

    model_config = ConfigDict(extra="forbid")

    base: FineTuneParams = Field(description="Parameters every config starts from")
    configs: list[SweepConfig] = Field(default_factory=list, description="Explicit configs")
    grid: SweepGrid | None = Field(default=None, description="Grid added after the explicit configs")
    name: str | None = Field(default=None, description="Sweep label (default: the flow run name)")
    max_concurrency: int = Field(default=2, ge=1, le=64, description="Configs training at the same time")
    task_runner: Literal["thread", "dask"] = Field(default="thread", description="Where config tasks run")
    dask_address: str | None = Field(
        default=None, description=f"Dask scheduler address (default ${DASK_ADDRESS_ENV}, else a LocalCluster)"
    )
    dask_processes: bool = Field(default=True, description="LocalCluster workers as processes (else threads)")
    deployment: str | None = Field(
        default=None, description="Run configs as runs of this deployment ('fine-tune/<name>') on its pool"
    )
    deployment_timeout_s: float = Field(default=7200.0, gt=0, description="Wait this long per deployment run")
    concurrency_limit: str | None = Field(
        default=None, description="Prefect global concurrency limit each config occupies (must exist)"
    )
    select_by: SelectMetric = Field(
        default="full_valid_loss", description="Metric that picks the best config"
    )
    select_mode: Literal["min", "max"] = "min"
    output_dir: Path | None = Field(default=None, description="Comparison files (default runs/sweep-<name>)")

    @model_validator(mode="after")
    def _need_configs(self) -> "SweepParams":
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


class SweepResult(BaseModel):
    """What a sweep produced: the comparison rows, the pick and the files written."""

    name: str
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None = None
    select_by: str
    n_succeeded: int
    n_failed: int
    output_dir: Path
    outputs: dict[str, Path] = Field(default_factory=dict)
    duration_s: float

    def frame(self) -> pd.DataFrame:
        """The comparison as a DataFrame (same columns as comparison.csv)."""
        return pd.DataFrame(self.rows)


def _default_name(index: int, cfg: SweepConfig) -> str:
    short = {"model": "", "n_epochs": "e", "learning_rate_multiplier": "lr", "batch_size": "bs", "seed": "s"}
    parts = [f"{i:02d}" for i in (index,)]
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
    data["metadata"] = {**base.metadata, SWEEP_KEY: sweep_name[:512], CONFIG_KEY: str(cfg.name)}
    return FineTuneParams.model_validate(data)


def _row_for(cfg: SweepConfig, params: FineTuneParams | None, base: FineTuneParams) -> SweepRow:
    p = params or base
    values = {
        key: getattr(cfg, key) if getattr(cfg, key) is not None else getattr(p, key) for key in OVERRIDABLE
    }
    return SweepRow(name=str(cfg.name), **values)


def _fill_from_result(row: SweepRow, result: RunRecord) -> SweepRow:
    row.status = SUCCEEDED if result.status == "succeeded" else result.status
    row.metrics = {k: v for k, v in result.final_metrics.items() if k in METRIC_COLUMNS}
    row.trained_tokens = result.trained_tokens
    row.duration_s = result.duration_s
    row.fine_tuned_model = result.fine_tuned_model
    row.job_id = result.job_id
    return row


def error_text(state: State[Any]) -> str:
    """Why a flow run's final state is not Completed (its exception, else its message)."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.type.value


def _run_subflow(row: SweepRow, params: FineTuneParams) -> SweepRow:
    state = fine_tune.with_options(flow_run_name=f"sweep-{row.name}")(
        **params.flow_arguments(), return_state=True
    )
    row.flow_run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
    if state.is_completed():
        return _fill_from_result(row, state.result())
    row.status, row.error = FAILED, error_text(state)
    return row


def _run_via_deployment(row: SweepRow, params: FineTuneParams, deployment: str, timeout_s: float) -> SweepRow:
    from prefect.deployments import run_deployment

    started = time.monotonic()
    run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call: never the coroutine
        deployment,
        parameters=params.flow_arguments(json=True),
        flow_run_name=f"sweep-{row.name}",
        timeout=timeout_s,
        as_subflow=True,
    )
    row.flow_run_id = str(run.id)
    state = run.state
    if state is None or not state.is_final():
        row.status, row.error = (
            FAILED,
            f"deployment run still {state.type.value if state else '?'} after {timeout_s:.0f}s",
        )
        return row
    if not state.is_completed():
        row.status, row.error = FAILED, state.message or state.type.value
        return row
    # The worker writes result.json into the output dir we chose; shared storage is assumed (same host/volume).
    result_path = Path(str(params.output_dir)) / "result.json"
    try:
        result = RunRecord.model_validate_json(result_path.read_text(encoding="utf-8"))
    except (OSError, ValidationError) as exc:
        row.status, row.error = FAILED, f"run completed but {result_path} is unreadable: {exc}"
        row.duration_s = time.monotonic() - started
        return row
    return _fill_from_result(row, result)


@contextmanager
def _limits(concurrency_limit: str | None, dask_semaphore: tuple[str, int] | None) -> Iterator[None]:
    with ExitStack() as stack:
        if dask_semaphore is not None:
            from distributed import Semaphore

            # A Dask-native semaphore bounds configs across a shared cluster (its workers may have more slots).
            stack.enter_context(Semaphore(max_leases=dask_semaphore[1], name=dask_semaphore[0]))
        if concurrency_limit:
            from prefect.concurrency.sync import concurrency

            stack.enter_context(concurrency(concurrency_limit, occupy=1, strict=True))
        yield


@task(name="sweep-config", cache_policy=NO_CACHE, persist_result=False, log_prints=False)
def run_config_task(
    row: SweepRow,
    params: FineTuneParams | None,
    *,
    setup_error: str | None = None,
    deployment: str | None = None,
    deployment_timeout_s: float = 7200.0,
    backend_env: dict[str, str] | None = None,
    concurrency_limit: str | None = None,
    dask_semaphore: tuple[str, int] | None = None,
) -> SweepRow:
    """Run one config and return its row; never raises, so one bad config cannot sink the sweep."""
    log = runtime.run_logger()
    if params is None:
        row.status, row.error = FAILED, setup_error or "invalid config"
        return row
    if backend_env:
        # Dask worker processes find the sweep's embedded backend through the env (host/port/data dir only).
        os.environ.update(backend_env)
    try:
        with _limits(concurrency_limit, dask_semaphore):
            if deployment:
                return _run_via_deployment(row, params, deployment, deployment_timeout_s)
            return _run_subflow(row, params)
    except Exception as exc:
        log.exception("sweep config %s failed", row.name)
        row.status, row.error = FAILED, f"{type(exc).__name__}: {exc}"
        return row


def make_task_runner(params: SweepParams) -> TaskRunner[Any]:
    """Thread pool (default) or Dask: a scheduler address, else a LocalCluster sized to max_concurrency."""
    if params.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=params.max_concurrency)
    from prefect_dask import DaskTaskRunner

    address = params.dask_address or os.environ.get(DASK_ADDRESS_ENV)
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": params.max_concurrency,
            "threads_per_worker": 1,
            "processes": params.dask_processes,
            "dashboard_address": None,
        }
    )


def _backend_env(conn: Connection) -> dict[str, str]:
    """How another process on this host reaches the same embedded backend (no secrets)."""
    if not conn.embedded or conn.transport is not None:
        return {}
    url = urlsplit(conn.settings.base_url)
    env = {"FTPIPE_BACKEND_HOST": url.hostname or "127.0.0.1", "FTPIPE_BACKEND_PORT": str(url.port or 80)}
    if conn.server_id.startswith("embedded:"):
        env["FTPIPE_BACKEND_DATA_DIR"] = conn.server_id.removeprefix("embedded:")
    return env


def _estimate_inputs(name: str, child: FineTuneParams) -> JobInputs | None:
    try:
        train, validation = child.train_path(), child.validation_path()
    except FileNotFoundError:
        return None  # the config fails on its own, with this message
    return JobInputs(
        name=name,
        train_path=train,
        validation_path=validation,
        model=child.model,
        method=child.method,
        n_epochs=child.n_epochs,
        batch_size=child.batch_size,
    )


def _check_budget(
    conn: Connection | None,
    prepared: list[tuple[SweepRow, FineTuneParams | None, str | None]],
    budget: Budget,
) -> None:
    """Estimate every config and check their sum against the budget before any is launched."""
    jobs = [
        inputs
        for row, child, _ in prepared
        if child is not None and (inputs := _estimate_inputs(row.name, child)) is not None
    ]
    if conn is None:  # configs run as deployment runs elsewhere: tokens and the price table only
        estimate_sweep_task(None, jobs, embedded=False, budget=budget)
        return
    with MKA1Client(conn.settings, transport=conn.transport) as client:
        estimate_sweep_task(client, jobs, embedded=conn.embedded, budget=budget)


def _sweep_name(params: SweepParams) -> str:
    if params.name:
        return params.name
    return current_flow_run.get_name() or time.strftime("%Y%m%d-%H%M%S")


@flow(name="fine-tune-sweep", persist_result=False)
def sweep(params: SweepParams) -> SweepResult:
    """Fine-tune once per config (concurrently, each its own flow run), compare, and pick the best."""
    started = time.monotonic()
    log = runtime.run_logger()
    name = _sweep_name(params)
    output_dir = (params.output_dir or Path("runs") / f"sweep-{name}").expanduser().resolve()
    configs = params.all_configs()
    log.info(
        "sweep %s: %d config(s), max %d at a time on %s",
        name,
        len(configs),
        params.max_concurrency,
        params.task_runner,
    )

    prepared: list[tuple[SweepRow, FineTuneParams | None, str | None]] = []
    for cfg in configs:
        try:
            child = child_params(params.base, cfg, output_dir, name)
            prepared.append((_row_for(cfg, child, params.base), child, None))
        except ValidationError as exc:
            prepared.append((_row_for(cfg, None, params.base), None, f"invalid config: {exc}"))

    dask = params.task_runner == "dask"
    with ExitStack() as stack:
        backend_env: dict[str, str] = {}
        conn: Connection | None = None
        if params.deployment is None:
            # One backend for the whole sweep; children reuse it instead of each starting their own.
            conn = stack.enter_context(open_connection(params.base.base_url, params.base.on_behalf_of))
            if dask:
                backend_env = _backend_env(conn)
            else:
                stack.enter_context(use_connection(conn))
        _check_budget(conn, prepared, params.base.budget())
        runner = stack.enter_context(make_task_runner(params))
        semaphore = (
            (f"ftpipe-sweep-{current_flow_run.get_id() or name}", params.max_concurrency) if dask else None
        )
        futures = [
            runner.submit(
                run_config_task,
                parameters={
                    "row": row,
                    "params": child,
                    "setup_error": error,
                    "deployment": params.deployment,
                    "deployment_timeout_s": params.deployment_timeout_s,
                    "backend_env": backend_env,
                    "concurrency_limit": params.concurrency_limit,
                    "dask_semaphore": semaphore,
                },
            )
            for row, child, error in prepared
        ]
        rows = [f.result() for f in futures]

    frame = comparison_frame(rows)
    best = pick_best(frame, params.select_by, params.select_mode)
    png = comparison_png(frame, params.select_by)
    outputs = write_outputs(frame, png, output_dir)
    publish_artifacts(frame, best, png, params.select_by, params.select_mode, key=f"sweep-{name}")
    n_ok = int((frame["status"] == SUCCEEDED).sum())
    result = SweepResult(
        name=name,
        rows=table_rows(frame),
        best=table_rows(best.to_frame().T)[0] if best is not None else None,
        select_by=params.select_by,
        n_succeeded=n_ok,
        n_failed=len(frame) - n_ok,
        output_dir=output_dir,
        outputs=outputs,
        duration_s=time.monotonic() - started,
    )
    (output_dir / "sweep.json").write_text(
        json.dumps(result.model_dump(mode="json"), indent=2), encoding="utf-8"
    )
    result.outputs["json"] = output_dir / "sweep.json"
    for row in rows:
        if row.status != SUCCEEDED:
            log.warning("config %s %s: %s", row.name, row.status, row.error)
    log.info(
        "sweep %s: %d/%d succeeded; best by %s: %s",
        name,
        n_ok,
        len(frame),
        params.select_by,
        result.best["name"] if result.best else "none",
    )
    if n_ok == 0:
        raise RuntimeError(f"sweep {name}: every config failed (see {outputs['csv']})")
    return result


# ---------------------------------------------------------------------------------------------------------
# Sweep files (``ftpipe sweep CONFIG``, cli/sweep.py).


def load_sweep_file(path: Path) -> SweepParams:
    """SweepParams from a YAML or JSON file; relative dataset paths resolve against the file's folder."""
    import yaml

    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    base = data.get("base") or {}
    for key in ("dataset_dir", "train_file", "validation_file", "smoke_file"):
        if isinstance(base.get(key), str) and not Path(base[key]).is_absolute():
            base[key] = str((path.parent / base[key]).resolve())
    return SweepParams.model_validate(data)
