"""Stage 5: turn a finished job's checkpoints and events into typed DataFrames, files and a loss curve.

Frames: ``metrics.parquet`` (one row per logged step), ``checkpoints.parquet`` (one row per checkpoint),
``events.parquet`` (the job's messages). What each metric averages over: backend/README.md, "Metrics".
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from client import MKA1Client
from client.models import FineTuningJobCheckpoint, FineTuningJobEvent
from contract.wire import CHECKPOINT_METRICS
from tasks import report, runtime
from tasks.progress import ProgressUpdate, publish
from tasks.record import MetricDefinition

METRIC_COLUMNS = CHECKPOINT_METRICS
# metrics.parquet columns, in order: the step, the six metrics, then the schedule. Other numeric keys a
# server adds to its metrics events follow as extra float columns.
STEP_COLUMNS: tuple[str, ...] = ("step", "epoch", *METRIC_COLUMNS, "learning_rate", "total_steps")
_INT_COLUMNS = ("step", "total_steps")
_MAX_ARTIFACT_ROWS = 200


@dataclass(frozen=True)
class MetricsResult:
    """Paths written by the stage, the final value of each metric (NaN-free) and where each came from."""

    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    final_metrics: dict[str, float] = field(default_factory=dict)
    definitions: dict[str, MetricDefinition] = field(default_factory=dict)
    checkpoint_values: dict[int, dict[str, float]] = field(default_factory=dict)
    total_steps: int | None = None
    n_checkpoints: int = 0
    n_events: int = 0
    n_steps_logged: int = 0


def _ts(series: list[int | None]) -> pd.Series:
    return pd.to_datetime(pd.Series(series, dtype="Int64"), unit="s", utc=True)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def step_values(event: FineTuningJobEvent) -> dict[str, float] | None:
    """A metrics event's numeric values keyed by name (``step`` included), or None for other events."""
    if event.type != "metrics" or not event.data:
        return None
    values = {k: v for k, v in ((k, _number(v)) for k, v in event.data.items()) if v is not None}
    step = values.get("step")
    if step is None or not math.isfinite(step):
        return None
    return values


def checkpoints_frame(checkpoints: list[FineTuningJobCheckpoint]) -> pd.DataFrame:
    """One row per checkpoint, ordered by step; the six metrics are float64 (NaN when not reported)."""
    rows = []
    for ck in checkpoints:
        m = ck.metrics
        step = ck.step_number if ck.step_number is not None else m.step
        rows.append(
            {"checkpoint_id": ck.id, "step": step, "model": ck.fine_tuned_model_checkpoint}
            | {name: getattr(m, name) for name in METRIC_COLUMNS}
        )
    frame = pd.DataFrame(rows, columns=["checkpoint_id", "step", "model", *METRIC_COLUMNS])
    frame["step"] = pd.to_numeric(frame["step"]).astype("Int64")
    for name in METRIC_COLUMNS:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    frame["checkpoint_id"] = frame["checkpoint_id"].astype("string")
    frame["model"] = frame["model"].astype("string")
    frame.insert(2, "created_at", _ts([ck.created_at for ck in checkpoints]))
    return frame.sort_values("step", kind="stable").reset_index(drop=True)


def checkpoint_values(checkpoints: pd.DataFrame) -> dict[int, dict[str, float]]:
    """Each checkpoint's reported metrics by step (NaN left out)."""
    out: dict[int, dict[str, float]] = {}
    for record in checkpoints.dropna(subset=["step"]).to_dict("records"):
        values = {n: float(record[n]) for n in METRIC_COLUMNS if not pd.isna(record[n])}
        out[int(record["step"])] = values
    return out


def metrics_frame(events: list[FineTuningJobEvent]) -> pd.DataFrame:
    """One row per logged step (ordered by step; a step reported twice, e.g. after a resume, keeps the last).

    Columns: ``step`` and ``total_steps`` (Int64), ``epoch``, the six metrics and ``learning_rate``
    (float64, NaN when not reported), ``created_at`` (UTC) and ``event_id``.
    """
    rows: list[dict[str, Any]] = []
    for ev in events:
        values = step_values(ev)
        if values is not None:
            rows.append({"event_id": ev.id, "created_at": ev.created_at, **values})
    extra = sorted({k for r in rows for k in r} - {*STEP_COLUMNS, "event_id", "created_at"})
    frame = pd.DataFrame(rows, columns=[*STEP_COLUMNS, *extra, "created_at", "event_id"])
    for name in (*STEP_COLUMNS, *extra):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    for name in _INT_COLUMNS:
        frame[name] = frame[name].round().astype("Int64")
    frame["created_at"] = _ts(list(frame["created_at"]))
    frame["event_id"] = frame["event_id"].astype("string")
    frame = frame.drop_duplicates(subset="step", keep="last")
    return frame.sort_values("step", kind="stable").reset_index(drop=True)


def events_frame(events: list[FineTuningJobEvent]) -> pd.DataFrame:
    """The job's messages (every event but metrics points), oldest first; ``data`` as JSON text."""
    rows = [
        {
            "event_id": ev.id,
            "created_at": ev.created_at,
            "level": ev.level,
            "type": ev.type or "message",
            "message": ev.message,
            "data": json.dumps(ev.data, sort_keys=True) if ev.data else None,
        }
        for ev in events
        if ev.type != "metrics"
    ]
    frame = pd.DataFrame(rows, columns=["event_id", "created_at", "level", "type", "message", "data"])
    for name in ("event_id", "level", "type", "message", "data"):
        frame[name] = frame[name].astype("string")
    frame["created_at"] = _ts(list(frame["created_at"]))
    return frame


def final_metrics(
    checkpoints: pd.DataFrame, metrics: pd.DataFrame
) -> tuple[dict[str, float], dict[str, MetricDefinition]]:
    """Last value of each metric and its definition: the last metrics event wins, else the last checkpoint."""
    values: dict[str, float] = {}
    definitions: dict[str, MetricDefinition] = {}
    for name in METRIC_COLUMNS:
        found = _last(metrics, name, "metrics_event") or _last(checkpoints, name, "checkpoint")
        if found is not None:
            values[name], definitions[name] = found
    found = _last(metrics, "learning_rate", "metrics_event")
    if found is not None:
        values["learning_rate"], definitions["learning_rate"] = found
    return values, definitions


def _last(
    frame: pd.DataFrame, name: str, source: Literal["metrics_event", "checkpoint"]
) -> tuple[float, MetricDefinition] | None:
    if name not in frame:
        return None
    rows = frame[frame[name].notna() & frame["step"].notna()]
    if not len(rows):
        return None
    step = int(rows["step"].iloc[-1])
    earlier = frame["step"][frame["step"] < step].dropna()
    first = int(earlier.iloc[-1]) + 1 if len(earlier) else 1
    return float(rows[name].iloc[-1]), MetricDefinition(
        source=source, step=step, over=_over(source, name, first, step)
    )


def _over(source: str, name: str, first: int, step: int) -> str:
    """What a value averages over, in the backend's terms (backend/README.md, "Metrics")."""
    at = f"at step {step}" if source == "metrics_event" else f"at the checkpoint at step {step}"
    if name.startswith("full_valid_"):
        return f"the whole validation file {at}"
    if name.startswith("valid_"):
        return f"the validation sample {at}"
    if name == "learning_rate":
        return f"the scheduler's rate after step {step}"
    if source == "metrics_event":
        return f"steps {first}-{step} (the window since the previous metrics event)"
    return f"steps {first}-{step} (the epoch ending at that checkpoint)"


def loss_curve_png(checkpoints: pd.DataFrame, metrics: pd.DataFrame, title: str | None = None) -> bytes:
    """Train/valid loss and token accuracy by step (from the per-step metrics, else the checkpoints)."""
    points = metrics if len(metrics) else checkpoints
    points = points.dropna(subset=["step"]).sort_values("step")
    # A bare Figure, not pyplot: no global figure registry (concurrent sweep configs plot at once) and no GUI
    # backend; imported here so starting a run does not pay matplotlib's import (~0.5 s).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, names, label in (
        (ax_loss, ("train_loss", "valid_loss", "full_valid_loss"), "loss"),
        (
            ax_acc,
            ("train_mean_token_accuracy", "valid_mean_token_accuracy", "full_valid_mean_token_accuracy"),
            "token accuracy",
        ),
    ):
        for name in names:
            series = points[["step", name]].dropna()
            if len(series):
                ax.plot(
                    series["step"].astype(float),
                    series[name],
                    marker="." if len(series) < 50 else None,
                    label=name,
                )
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    # Fixed margins: ``tight_layout`` measures every text extent first (0.19 -> 0.11 s CPU a plot), and this
    # runs beside the final model's eval on the same cores.
    fig.subplots_adjust(left=0.06, right=0.985, bottom=0.13, top=0.86, wspace=0.17)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# Reads only: the client retries each call in place, so the stage needs no task retry of its own.
@task(name="collect-metrics", cache_policy=NO_CACHE, persist_result=False)
def collect_metrics_task(client: MKA1Client, job_id: str, output_dir: Path) -> MetricsResult:
    """Fetch all events and checkpoints of ``job_id`` and write frames (Parquet + CSV) and a PNG."""
    log = runtime.run_logger()
    publish(ProgressUpdate("metrics", f"collecting metrics of {job_id}", job_id=job_id))
    events = client.jobs.new_events(job_id, None)
    checkpoints = list(client.jobs.list_checkpoints(job_id))
    ck = checkpoints_frame(checkpoints)
    steps = metrics_frame(events)
    ev = events_frame(events)
    out = Path(output_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for name, frame in (("metrics", steps), ("checkpoints", ck), ("events", ev)):
        files[f"{name}_parquet"] = out / f"{name}.parquet"
        files[f"{name}_csv"] = out / f"{name}.csv"
        frame.to_parquet(files[f"{name}_parquet"], index=False)
        frame.to_csv(files[f"{name}_csv"], index=False)
    files["loss_curve_png"] = out / "loss_curve.png"
    png = loss_curve_png(ck, steps, title=job_id)
    files["loss_curve_png"].write_bytes(png)
    finals, definitions = final_metrics(ck, steps)
    totals = steps["total_steps"].dropna()
    log.info(
        "job %s: %d logged steps, %d checkpoints, %d messages, final %s -> %s",
        job_id,
        len(steps),
        len(ck),
        len(ev),
        ", ".join(f"{k}={v:.4g}" for k, v in finals.items()) or "no metrics",
        out,
    )
    runtime.table(
        report.frame_records(ck),
        key=runtime.artifact_key("checkpoints"),
        description=f"checkpoints of {job_id}",
    )
    runtime.table(
        report.frame_records(steps),
        key=runtime.artifact_key("metrics"),
        description=f"per-step metrics of {job_id}",
    )
    runtime.markdown(
        report.loss_curve_markdown(job_id, png, files["loss_curve_png"]),
        key=runtime.artifact_key("loss-curve"),
        description="train/valid loss and token accuracy by step",
    )
    return MetricsResult(
        output_dir=out,
        files=files,
        final_metrics=finals,
        definitions=definitions,
        checkpoint_values=checkpoint_values(ck),
        total_steps=int(totals.iloc[-1]) if len(totals) else None,
        n_checkpoints=len(ck),
        n_events=len(events),
        n_steps_logged=len(steps),
    )
