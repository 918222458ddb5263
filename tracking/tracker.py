"""Mirror one run into MLflow from a background thread, so tracking never fails or slows the run.

Every public method only queues work and returns at once. The thread imports MLflow, opens the store,
creates the run, and flushes metric points in batches every ``flush_interval_s``. The first error (server
unreachable, bad credentials, store locked) is reported once through ``warn`` and turns tracking off for
the rest of the run; later calls are dropped. ``finish`` waits a bounded time for the queue to drain.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tracking.settings import TrackingTarget

_log = logging.getLogger("ftpipe.tracking")

# MLflow's REST client retries with exponential backoff for minutes by default; a tracking server must
# not hold a training run hostage, so unless the user set these, requests give up quickly.
_HTTP_ENV = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
)
# log_batch limits of the MLflow REST API.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000
RunStatus = Literal["FINISHED", "FAILED", "KILLED"]


@dataclass(frozen=True)
class Point:
    """One metric value at a step (``timestamp_ms``: when the server recorded it)."""

    key: str
    value: float
    step: int
    timestamp_ms: int


@dataclass(frozen=True)
class TrackedRun:
    """Where the run landed (no credentials)."""

    tracking_uri: str
    experiment_id: str
    run_id: str


def quiet_mlflow_logs() -> None:
    """MLflow and alembic log store migrations at INFO; the run's own log should not fill with them."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_mlflow_env(target: TrackingTarget) -> None:
    """Bounded HTTP retries/timeouts, no telemetry, and the MKA1 key as bearer token (user settings win)."""
    values = (str(target.max_retries), str(max(1, round(target.timeout_s))), "1")
    for name, value in zip(_HTTP_ENV, values, strict=True):
        os.environ.setdefault(name, value)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if target.token is not None:
        # MLflow's REST and artifact clients read the bearer token from the environment at request time.
        os.environ.setdefault("MLFLOW_TRACKING_TOKEN", target.token.get_secret_value())


def open_client(target: TrackingTarget) -> Any:
    """An ``MlflowClient`` for the target (imports MLflow: seconds, so callers do this off the main path)."""
    configure_mlflow_env(target)
    from mlflow.tracking import MlflowClient

    quiet_mlflow_logs()  # after the import: MLflow sets its logger's level when it loads

    if target.uri.startswith("sqlite:///"):
        Path(target.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=target.uri)


def experiment_id(client: Any, target: TrackingTarget) -> str:
    """The id of the target's experiment, created on first use."""
    found = client.get_experiment_by_name(target.experiment)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(target.experiment, artifact_location=target.artifact_location))
    except Exception:
        # Two runs may create it at once: the loser reads the winner's.
        found = client.get_experiment_by_name(target.experiment)
        if found is None:
            raise
        return str(found.experiment_id)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class Tracker:
    """One MLflow run, fed from the caller's thread and written from a background thread."""

    def __init__(self, target: TrackingTarget, warn: Callable[[str], None] | None = None) -> None:
        self.target = target
        self._warn = warn or _log.warning
        self._ops: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._points: list[Point] = []
        self._lock = threading.Lock()
        self._client: Any = None
        self._experiment_id: str | None = None
        self._run_id: str | None = None
        self._logged_params: dict[str, str] = {}
        self._off: str | None = None
        self.started = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._work, name="ftpipe-tracking", daemon=True)
        self._thread.start()

    # --- caller side: queue and return -------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """False once tracking was turned off by an error."""
        return self._off is None

    @property
    def run(self) -> TrackedRun | None:
        """The MLflow run, once created (None while starting or when tracking is off before that)."""
        if self._run_id is None or self._experiment_id is None:
            return None
        return TrackedRun(self.target.display_uri, self._experiment_id, self._run_id)

    def start(
        self,
        *,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> None:
        """Create the run (in the background) with its name, tags and the params known up front."""
        self.started = True
        all_tags = {**(tags or {}), "mlflow.runName": run_name}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self._submit(lambda: self._create_run(all_tags))
        if params:
            self.log_params(params)

    def log_params(self, params: Mapping[str, str]) -> None:
        """Params are write-once in MLflow: a key already logged with the same value is skipped."""
        self._submit(lambda: self._log_params(dict(params)))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Add or overwrite run tags."""
        items = dict(tags)
        self._submit(lambda: self._with_run(lambda c, r: c.log_batch(r, tags=_tags(items))))

    def log_points(self, points: Iterable[Point]) -> None:
        """Buffer metric points; the thread sends them in batches."""
        if self._off is not None:
            return
        with self._lock:
            self._points.extend(points)

    def log_metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        """Log single values (summary numbers such as an eval score) at ``step``."""
        now = int(time.time() * 1000)
        self.log_points(Point(k, float(v), step, now) for k, v in values.items())

    def log_artifacts(self, files: Iterable[Path], artifact_path: str | None = None) -> None:
        """Copy files into the run's artifacts (missing files are skipped)."""
        paths = [Path(f) for f in files]
        self._submit(
            lambda: self._with_run(
                lambda c, r: [c.log_artifact(r, str(p), artifact_path) for p in paths if p.is_file()]
            )
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as an artifact file of the run."""
        self._submit(lambda: self._with_run(lambda c, r: c.log_text(r, text, artifact_file)))

    def adopt(self, key: str, values: Iterable[str]) -> None:
        """Make the runs of this experiment tagged ``key`` = one of ``values`` children of this run."""
        wanted = [v for v in values if v]
        self._submit(lambda: self._with_run(lambda c, r: self._adopt(c, r, key, wanted)))

    def _adopt(self, client: Any, parent: str, key: str, values: list[str]) -> None:
        assert self._experiment_id is not None
        for value in values:
            safe = value.replace("'", "")
            for run in client.search_runs([self._experiment_id], filter_string=f"tags.{key} = '{safe}'"):
                if run.info.run_id != parent:
                    client.set_tag(run.info.run_id, "mlflow.parentRunId", parent)

    def finish(self, status: RunStatus = "FINISHED", wait_s: float = 30.0) -> TrackedRun | None:
        """End the run and wait up to ``wait_s`` for everything queued to be written."""
        self._submit(lambda: self._with_run(lambda c, r: c.set_terminated(r, status=status)))
        self._ops.put(None)
        self._done.wait(wait_s)
        if not self._done.is_set() and self._off is None and self.started:
            self._turn_off(f"still writing after {wait_s:.0f}s; the rest is dropped")
        return self.run

    def flush(self, wait_s: float = 10.0) -> bool:
        """Wait up to ``wait_s`` until everything queued so far is written; False if it was not."""
        if self._off is not None:
            return False
        written = threading.Event()
        self._submit(written.set)
        return written.wait(wait_s)

    # --- background side -----------------------------------------------------------------------------------
    def _submit(self, op: Callable[[], None]) -> None:
        if self._off is None:
            self._ops.put(op)

    def _connect(self) -> None:
        for attempt in (1, 2):
            try:
                self._client = open_client(self.target)
                self._experiment_id = experiment_id(self._client, self.target)
                return
            except Exception as exc:
                # Concurrent runs (a sweep) may race to create a fresh local store: one retry settles it.
                if attempt == 2 or not self.target.is_local:
                    self._turn_off(_describe(exc))
                    return
                time.sleep(1.0)

    def _work(self) -> None:
        self._connect()
        while True:
            try:
                op = self._ops.get(timeout=self.target.flush_interval_s)
            except queue.Empty:
                op = _idle
            if self._off is None:
                try:
                    self._send_points()
                    if op is not None:
                        op()
                except Exception as exc:
                    self._turn_off(_describe(exc))
            if op is None:
                break
        self._done.set()

    def _turn_off(self, reason: str) -> None:
        if self._off is not None:
            return
        self._off = reason
        with self._lock:
            self._points.clear()
        self._warn(f"experiment tracking is off for this run ({self.target.display_uri}): {reason}")

    def _create_run(self, tags: dict[str, str]) -> None:
        assert self._experiment_id is not None
        run = self._client.create_run(self._experiment_id, tags=tags)
        self._run_id = run.info.run_id

    def _with_run(self, action: Callable[[Any, str], object]) -> None:
        if self._run_id is not None:
            action(self._client, self._run_id)

    def _log_params(self, params: dict[str, str]) -> None:
        fresh = {
            k: v[:MAX_PARAM_CHARS]
            for k, v in params.items()
            if self._logged_params.get(k) != v[:MAX_PARAM_CHARS]
        }
        if not fresh or self._run_id is None:
            return
        from mlflow.entities import Param

        items = list(fresh.items())
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            chunk = items[start : start + MAX_PARAMS_PER_BATCH]
            self._client.log_batch(self._run_id, params=[Param(k, v) for k, v in chunk])
        self._logged_params.update(fresh)

    def _send_points(self) -> None:
        if self._run_id is None:
            return
        with self._lock:
            points, self._points = self._points, []
        if not points:
            return
        from mlflow.entities import Metric

        for start in range(0, len(points), MAX_METRICS_PER_BATCH):
            chunk = points[start : start + MAX_METRICS_PER_BATCH]
            self._client.log_batch(
                self._run_id, metrics=[Metric(p.key, p.value, p.timestamp_ms, p.step) for p in chunk]
            )


def _idle() -> None:
    """A tick with nothing queued: the loop still sends buffered points."""


def _tags(items: Mapping[str, str]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(k, v) for k, v in items.items()]
