"""The experiment side of one ``fine_tune`` run: its MLflow run, Prefect run name and tags, the live loss
curve, and the Prefect event on the job's terminal state. Nothing here may fail or stall the run."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.models import FineTuningJob, FineTuningJobEvent
from tasks import runtime
from tasks.record import RunRecord, TrackingRef
from tracking.settings import TrackingTarget, resolve_target
from tracking.tracker import Point, RunStatus, Tracker

if TYPE_CHECKING:
    from flows.params import FineTuneParams

_log = logging.getLogger("ftpipe.experiment")
_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]+")
# The live loss-curve artifact is a PNG render and an API call: at most this often, plus each checkpoint.
LIVE_CURVE_EVERY_S = 30.0
EVENT_PREFIX = "ftpipe.job"
# Longest the end of a run waits for tracking to catch up (opening a fresh SQLite store takes ~10 s).
FINISH_WAIT_S = 30.0
_RUN_STATUS: dict[str, RunStatus] = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


def model_label(model: str) -> str:
    """``local:tiny-chat`` -> ``tiny-chat``; ``local:/models/Qwen2`` -> ``Qwen2``; ``ft:a:b:c`` kept readable."""
    short = model.removeprefix("local:").rstrip("/").rsplit("/", 1)[-1]
    return _NAME_BAD.sub("-", short).strip("-") or "model"


def run_name(model: str, suffix: str | None, seed: int | None) -> str:
    """A readable run name from the config, e.g. ``tiny-chat-support-bot-s42``."""
    parts = [model_label(model)]
    if suffix:
        parts.append(_NAME_BAD.sub("-", suffix).strip("-"))
    if seed is not None:
        parts.append(f"s{seed}")
    return "-".join(p for p in parts if p)


def dataset_label(dataset_dir: Path | None, train_path: Path) -> str:
    """The dataset folder's name, else the training file's stem."""
    return (dataset_dir.absolute().name if dataset_dir else "") or train_path.stem


def run_tags(model: str, method: str, dataset: str, deployment: str | None) -> dict[str, str]:
    """Tags shared by the Prefect flow run and the MLflow run."""
    tags = {"model": model, "method": method, "dataset": dataset}
    if deployment:
        tags["deployment"] = deployment
    return tags


def prefect_tags(tags: dict[str, str]) -> list[str]:
    """``key:value`` strings: the form a Prefect flow run's tags take."""
    return [f"{k}:{v}" for k, v in tags.items()]


def creation_tags(params: FineTuneParams) -> list[str]:
    """The tags ``ftpipe run`` creates its flow run with: the ones the flow adds itself (no deployment)."""
    dataset = dataset_label(params.dataset_dir, params.train_path())
    return prefect_tags(run_tags(params.model, params.method, dataset, None))


def _tracking_url(target: TrackingTarget, experiment_id: str, run_id: str) -> str | None:
    # Only an MLflow server serves MLflow's UI at its root; a local store needs `mlflow ui` first.
    if target.is_local or target.token is not None:
        return None
    return f"{target.display_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def tag_prefect_run(flow_run_id: str | None, tags: dict[str, str]) -> None:
    """Add ``key:value`` tags to the current flow run (best effort: tags are a convenience)."""
    if not flow_run_id or not runtime.in_run():
        return
    wanted = prefect_tags(tags)
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None and set(wanted) <= set(ctx.flow_run.tags):
        return  # the run was created with them (`ftpipe run`): no round trip to the Prefect API
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
            merged = [*run.tags, *(t for t in wanted if t not in run.tags)]
            if merged != run.tags:
                client.update_flow_run(flow_run_id, tags=merged)  # type: ignore[arg-type]
    except Exception:
        _log.debug("could not tag flow run %s", flow_run_id, exc_info=True)


def emit_job_event(
    status: str, job_id: str, model: str, payload: dict[str, Any], flow_run_id: str | None = None
) -> None:
    """Emit ``ftpipe.job.<status>`` for Prefect automations (e.g. notify when a nightly retrain fails)."""
    if not runtime.in_run():
        return
    try:
        from prefect.events import emit_event

        related = (
            [{"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"}]
            if flow_run_id
            else None
        )
        emit_event(
            event=f"{EVENT_PREFIX}.{status}",
            resource={"prefect.resource.id": f"{EVENT_PREFIX}.{job_id}", "prefect.resource.name": job_id},
            related=related,
            payload={"job_id": job_id, "model": model, "status": status, **payload},
        )
    except Exception:
        _log.debug("could not emit the %s event for %s", status, job_id, exc_info=True)


class ExperimentRun:
    """Tracks one run: MLflow (when configured), live Prefect loss curve, terminal Prefect event."""

    def __init__(
        self,
        tracker: Tracker | None,
        *,
        model: str,
        flow_run_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tracker = tracker
        self.model = model
        self.flow_run_id = flow_run_id
        self.job_id: str | None = None
        self._clock = clock
        self._metric_events: list[FineTuningJobEvent] = []
        self._curve_at: float | None = None
        self._curve_dirty = False

    @classmethod
    def prepare(
        cls,
        *,
        model: str,
        flow_run_id: str | None,
        warn: Callable[[str], None],
        target: TrackingTarget | None = None,
    ) -> ExperimentRun:
        """Open the tracking store in the background now (MLflow takes seconds to import and migrate)."""
        target = target or resolve_target()
        tracker = Tracker(target, warn=warn) if target is not None else None
        return cls(tracker, model=model, flow_run_id=flow_run_id)

    def begin(self, *, name: str, tags: dict[str, str], params: dict[str, str]) -> None:
        """Create the tracked run and tag the Prefect flow run."""
        if self.tracker is not None:
            run_tags = {**tags, "flow_run_id": self.flow_run_id} if self.flow_run_id else dict(tags)
            self.tracker.start(run_name=name, tags=run_tags, params=params)
        tag_prefect_run(self.flow_run_id, tags)

    def job_created(self, job_id: str) -> None:
        """The job is known: tag the tracked run with it."""
        self.job_id = job_id
        if self.tracker is not None:
            self.tracker.set_tags({"job_id": job_id})

    def observe(self, job: FineTuningJob, events: list[FineTuningJobEvent]) -> None:
        """The wait loop's new events: metric points to MLflow now; the Prefect curve when due."""
        from tasks.metrics import step_values

        points: list[Point] = []
        checkpoint = False
        for ev in events:
            values = step_values(ev)
            if values is None:
                checkpoint |= "checkpoint" in ev.message.lower()
                continue
            self._metric_events.append(ev)
            step = int(values.pop("step"))
            stamp = (ev.created_at or int(time.time())) * 1000
            points.extend(Point(k, v, step, stamp) for k, v in values.items())
        if points:
            self._curve_dirty = True
            if self.tracker is not None:
                self.tracker.log_points(points)
        now = self._clock()
        due = self._curve_at is None or now - self._curve_at >= LIVE_CURVE_EVERY_S
        if self._curve_dirty and (checkpoint or due) and not job.is_terminal:
            self._publish_curve(job)
            self._curve_at, self._curve_dirty = now, False

    def _publish_curve(self, job: FineTuningJob) -> None:
        if not runtime.in_run():
            return
        from tasks.metrics import checkpoints_frame, loss_curve_png, metrics_frame
        from tasks.report import loss_curve_markdown

        frame = metrics_frame(self._metric_events)
        last = frame.iloc[-1]
        total = last["total_steps"]
        progress = f"step {last['step']}" + ("" if total is None or total != total else f"/{total}")
        png = loss_curve_png(checkpoints_frame([]), frame, title=f"{job.id} (training)")
        runtime.markdown(
            loss_curve_markdown(job.id, png, note=f"Live while training, {progress}.\n\n"),
            key=runtime.artifact_key("loss-curve"),
            description="train/valid loss and token accuracy by step (updated while the job trains)",
        )

    def reference(self) -> TrackingRef | None:
        """Where the tracked run is, once it exists."""
        run = self.tracker.run if self.tracker is not None else None
        if run is None or self.tracker is None:
            return None
        url = _tracking_url(self.tracker.target, run.experiment_id, run.run_id)
        return TrackingRef(
            tracking_uri=run.tracking_uri, experiment_id=run.experiment_id, run_id=run.run_id, url=url
        )

    def succeeded(self, record: RunRecord, checkpoints: dict[int, dict[str, float]]) -> RunRecord:
        """Log the record (params, checkpoint and eval metrics, artifacts), end the run, emit the event.

        Returns the record with its ``tracking`` reference; result.json is rewritten to include it.
        """
        if self.tracker is not None and self.tracker.started:
            record = self._track_success(self.tracker, record, checkpoints)
        emit_job_event(
            "succeeded",
            record.job_id,
            record.base_model,
            {
                "fine_tuned_model": record.fine_tuned_model,
                "metrics": record.final_metrics,
                "trained_tokens": record.trained_tokens,
                "output_dir": str(record.output_dir),
            },
            self.flow_run_id,
        )
        return record

    def _track_success(
        self, tracker: Tracker, record: RunRecord, checkpoints: dict[int, dict[str, float]]
    ) -> RunRecord:
        tracker.log_params(record.params())
        tags = {"job_id": record.job_id, "status": record.status}
        if record.fine_tuned_model:
            tags["fine_tuned_model"] = record.fine_tuned_model
        tracker.set_tags(tags)
        stamp = int(time.time() * 1000)
        tracker.log_points(
            Point(f"checkpoint.{k}", v, step, stamp)
            for step, values in checkpoints.items()
            for k, v in values.items()
        )
        if record.trained_tokens is not None:
            tracker.log_metrics({"trained_tokens": float(record.trained_tokens)})
        if record.estimate is not None:
            # The pre-launch estimate beside the actuals: estimate.estimated_tokens, estimate.token_error, ...
            numbers = record.estimate.model_dump(exclude={"n_epochs"})
            tracker.log_metrics(
                {
                    f"estimate.{k}": float(v)
                    for k, v in numbers.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
            )
        if record.evaluation is not None:
            tracker.log_metrics(record.evaluation.metric_values())
            tracker.set_tags(record.evaluation.tags(record.promoted_as))
        result_json = record.outputs.get("result_json")
        tracker.log_artifacts(
            p for k, p in record.outputs.items() if not k.endswith("_csv") and p != result_json
        )
        # A short job can end before the store finished opening: wait (bounded) so the record can say
        # where its tracked run is.
        tracker.flush(wait_s=FINISH_WAIT_S)
        ref = self.reference()
        if ref is not None:
            record = record.model_copy(update={"tracking": ref})
            if result_json is not None:
                result_json.write_text(record.to_json(), encoding="utf-8")
        if result_json is not None:
            tracker.log_artifacts([result_json])
        tracker.finish("FINISHED", wait_s=FINISH_WAIT_S)
        return record

    def ended_without_success(self, job_id: str | None, status: str, error: str | None = None) -> None:
        """The job failed or was cancelled (or the run stopped before a job existed)."""
        if self.tracker is not None:
            if self.tracker.started:
                self.tracker.set_tags({"status": status, **({"error": error[:500]} if error else {})})
                self.tracker.finish(_RUN_STATUS.get(status, "FAILED"), wait_s=FINISH_WAIT_S)
            else:
                self.tracker.finish(wait_s=0.0)  # no run was created: do not wait for the store to open
        if job_id is not None and status in _RUN_STATUS:
            metrics = {}
            if self._metric_events:
                from tasks.metrics import metrics_frame

                last = metrics_frame(self._metric_events).iloc[-1]
                metrics = {k: float(v) for k, v in last.items() if isinstance(v, float) and v == v}
            emit_job_event(status, job_id, self.model, {"error": error, "metrics": metrics}, self.flow_run_id)


def track_sweep(
    name: str,
    child_flow_run_ids: list[str],
    *,
    params: dict[str, str],
    best: dict[str, float],
    artifacts: list[Path],
    warn: Callable[[str], None],
) -> TrackingRef | None:
    """A sweep's parent run: its settings, the best config's metric, the comparison files, and every
    config's tracked run (found by its flow-run id) nested under it."""
    target = resolve_target()
    if target is None:
        return None
    tracker = Tracker(target, warn=warn)
    tracker.start(run_name=f"sweep-{name}", tags={"sweep": name, "kind": "sweep"}, params=params)
    tracker.log_metrics(best)
    tracker.log_artifacts(artifacts)
    tracker.adopt("flow_run_id", child_flow_run_ids)
    run = tracker.finish("FINISHED", wait_s=FINISH_WAIT_S)
    if run is None:
        return None
    url = _tracking_url(target, run.experiment_id, run.run_id)
    return TrackingRef(
        tracking_uri=run.tracking_uri, experiment_id=run.experiment_id, run_id=run.run_id, url=url
    )
