"""The ``fine-tune-sweep`` flow: run ``fine-tune`` once per config, concurrently, and compare the results.

Each config becomes one ``sweep-config`` task that starts a ``fine-tune`` subflow run (or, with
``deployment`` set, a run of that deployment on a work pool), so every config is its own flow run in the UI.
Concurrency comes from the task runner (a thread pool or Dask) plus optional limits; one failed config is
reported in the comparison instead of failing the sweep. Ctrl-C (which only the main thread sees) tells the
configs' waits to stop as if it had reached them: each cancels its own job and ends Cancelled, and so does the
sweep. Inputs: ``flows.sweep_config``; comparison: ``flows.sweep_report``.
"""

# No ``from __future__ import annotations``: a served/pickled flow resolves its parameter annotations from
# the function object alone (Prefect's Runner cloudpickles it into a subprocess), so they must be real types.
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Cancelled, State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import ValidationError

from client import MKA1Client
from estimate.budget import Budget
from estimate.core import JobInputs
from flows.backend_runtime import Connection, open_connection, use_connection
from flows.experiment import track_sweep
from flows.fine_tune import fine_tune
from flows.params import FineTuneParams
from flows.sweep_config import (
    DASK_ADDRESS_ENV,
    SelectMetric,
    SweepConfig,
    SweepGrid,
    SweepParams,
    child_params,
)
from flows.sweep_report import (
    FAILED,
    SUCCEEDED,
    SweepResult,
    SweepRow,
    fill_from_result,
    report,
    row_for,
)
from tasks import runtime
from tasks.estimate import estimate_sweep_task
from tasks.progress import ProgressUpdate, publish
from tasks.record import RunRecord

INTERRUPTED_BEFORE_START = "interrupted before it started"
_CONFIG_RUN_PREFIX = "sweep-"


def config_of_run(flow_run_name: str | None) -> str | None:
    """The config a sweep's fine-tune run belongs to, from the run's name (None: not a config's run)."""
    if flow_run_name and flow_run_name.startswith(_CONFIG_RUN_PREFIX):
        return flow_run_name.removeprefix(_CONFIG_RUN_PREFIX)
    return None


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: every running config cancelled its job; ``str()`` is the sweep's one line."""


def interrupted_line(rows: list[SweepRow]) -> str:
    """What an interrupted sweep did, in one line (``interrupted: cancelled job A (lr-1); cancelled job B (lr-2)``)."""
    done = [
        f"{row.error.removeprefix('interrupted: ')} ({row.name})"
        for row in rows
        if row.error and row.error.startswith("interrupted: ")
    ]
    return "interrupted: " + ("; ".join(done) if done else "no config had a running job")


def error_text(state: State[Any]) -> str:
    """Why a flow run's final state is not Completed (its exception, else its message)."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.type.value


def _run_subflow(row: SweepRow, params: FineTuneParams) -> SweepRow:
    state = fine_tune.with_options(flow_run_name=f"{_CONFIG_RUN_PREFIX}{row.name}")(
        **params.flow_arguments(), return_state=True
    )
    row.flow_run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
    if state.is_completed():
        return fill_from_result(row, state.result())
    # An interrupted config's message says which job it cancelled (flows/cancellation.interrupted_message).
    row.status, row.error = FAILED, state.message if state.is_cancelled() else error_text(state)
    return row


def _run_via_deployment(row: SweepRow, params: FineTuneParams, deployment: str, timeout_s: float) -> SweepRow:
    from prefect.deployments import run_deployment

    started = time.monotonic()
    run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call: never the coroutine
        deployment,
        parameters=params.flow_arguments(json=True),
        flow_run_name=f"{_CONFIG_RUN_PREFIX}{row.name}",
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
        row.status, row.error = (
            FAILED,
            f"run completed but {result_path} is unreadable: {exc}",
        )
        row.duration_s = time.monotonic() - started
        return row
    return fill_from_result(row, result)


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
    if runtime.interrupt_requested():
        row.status, row.error = FAILED, INTERRUPTED_BEFORE_START
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
    env = {
        "FTPIPE_BACKEND_HOST": url.hostname or "127.0.0.1",
        "FTPIPE_BACKEND_PORT": str(url.port or 80),
    }
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


# Built once: the signature's defaults and descriptions, from SweepParams (their one home).
_S = SweepParams.signature_defaults()


# Every parameter is top-level, like fine-tune's: a deployment run overriding one keeps the others.
@flow(name="fine-tune-sweep", persist_result=False)
def sweep(
    base: FineTuneParams,
    configs: list[SweepConfig] = _S["configs"],
    grid: SweepGrid | None = _S["grid"],
    name: str | None = _S["name"],
    max_concurrency: int = _S["max_concurrency"],
    task_runner: Literal["thread", "dask"] = _S["task_runner"],
    dask_address: str | None = _S["dask_address"],
    dask_processes: bool = _S["dask_processes"],
    deployment: str | None = _S["deployment"],
    deployment_timeout_s: float = _S["deployment_timeout_s"],
    concurrency_limit: str | None = _S["concurrency_limit"],
    select_by: SelectMetric = _S["select_by"],
    select_mode: Literal["min", "max"] = _S["select_mode"],
    output_dir: Path | None = _S["output_dir"],
) -> SweepResult:
    """Fine-tune once per config (concurrently, each its own flow run), compare, and pick the best."""
    # locals() is exactly the arguments here; checked together (configs or a grid) before anything runs.
    params = SweepParams.from_arguments(dict(locals()))
    try:
        return _sweep(params)
    except SweepInterrupted as exc:
        # As fine-tune does: a returned Cancelled state ends the run Cancelled, not Crashed.
        return Cancelled(message=str(exc))  # type: ignore[return-value]
    except KeyboardInterrupt:
        return Cancelled(message="interrupted before any config started")  # type: ignore[return-value]


def _sweep(params: SweepParams) -> SweepResult:
    started = time.monotonic()
    log = runtime.run_logger()
    runtime.reset_interrupt()
    flow_run_id = current_flow_run.get_id()
    publish(
        ProgressUpdate(
            "run", "sweep started", flow_run_id=flow_run_id, ui_url=runtime.prefect_ui_url(flow_run_id)
        )
    )
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
            prepared.append((row_for(cfg, child), child, None))
        except ValidationError as exc:
            prepared.append((row_for(cfg, params.base), None, f"invalid config: {exc}"))

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
            (
                f"ftpipe-sweep-{current_flow_run.get_id() or name}",
                params.max_concurrency,
            )
            if dask
            else None
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
        try:
            rows = [f.result() for f in futures]
        except KeyboardInterrupt:
            # Ctrl-C reaches this (main) thread only. The configs' waits are told to stop as if it had reached
            # them: each cancels its own job and ends Cancelled; configs not started yet do not start.
            log.warning("sweep interrupted: cancelling the running configs' jobs")
            runtime.interrupt_waits()
            try:
                rows = [f.result() for f in futures]
            finally:
                runtime.reset_interrupt()  # this process's later runs wait normally
            raise SweepInterrupted(interrupted_line(rows)) from None

    result = report(rows, name, params.select_by, params.select_mode, output_dir, started=started)
    best_value = result.best.get(params.select_by) if result.best else None
    track_sweep(
        name,
        [row.flow_run_id for row in rows if row.flow_run_id],
        params={"select_by": params.select_by, "select_mode": params.select_mode, "configs": str(len(rows))},
        best={f"best.{params.select_by}": float(best_value)} if isinstance(best_value, int | float) else {},
        artifacts=list(result.outputs.values()),
        warn=log.warning,
    )
    for row in rows:
        if row.status != SUCCEEDED:
            log.warning("config %s %s: %s", row.name, row.status, row.error)
    log.info(
        "sweep %s: %d/%d succeeded; best by %s: %s",
        name,
        result.n_succeeded,
        len(rows),
        params.select_by,
        result.best["name"] if result.best else "none",
    )
    if result.n_succeeded == 0:
        raise RuntimeError(f"sweep {name}: every config failed (see {result.outputs['csv']})")
    return result
