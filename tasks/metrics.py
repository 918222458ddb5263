"""Stage 5: turn a finished job's checkpoints and events into typed DataFrames, files and a loss curve."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: workers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from prefect import task  # noqa: E402

from client import MKA1Client  # noqa: E402
from client.models import FineTuningJobCheckpoint, FineTuningJobEvent  # noqa: E402
from contract.wire import CHECKPOINT_METRICS  # noqa: E402
from tasks import _runtime  # noqa: E402
from tasks.progress import ProgressUpdate, publish  # noqa: E402
from tasks.retry_policy import api_task_options, retry_transient  # noqa: E402

METRIC_COLUMNS = CHECKPOINT_METRICS
_MAX_ARTIFACT_ROWS = 200


@dataclass(frozen=True)
class MetricsResult:
    """Paths written by the stage and the final value of each metric (NaN-free)."""

    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    final_metrics: dict[str, float] = field(default_factory=dict)
    n_checkpoints: int = 0
    n_events: int = 0


def _ts(series: list[int | None]) -> pd.Series:
    return pd.to_datetime(pd.Series(series, dtype="Int64"), unit="s", utc=True)


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


def events_frame(events: list[FineTuningJobEvent]) -> pd.DataFrame:
    """One row per event (oldest first) with level/type/message and metric data expanded to columns."""
    rows: list[dict[str, Any]] = []
    for ev in events:
        data = ev.data or {}
        row: dict[str, Any] = {"event_id": ev.id, "level": ev.level, "type": ev.type, "message": ev.message}
        row["step"] = data.get("step")
        for name in METRIC_COLUMNS:
            row[name] = data.get(name)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["event_id", "level", "type", "message", "step", *METRIC_COLUMNS])
    for name in ("event_id", "level", "type", "message"):
        frame[name] = frame[name].astype("string")
    frame["step"] = pd.to_numeric(frame["step"], errors="coerce").astype("Int64")
    for name in METRIC_COLUMNS:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    frame.insert(1, "created_at", _ts([ev.created_at for ev in events]))
    return frame


def final_metrics(checkpoints: pd.DataFrame, events: pd.DataFrame) -> dict[str, float]:
    """Last reported value of each metric: the last metrics event, else the last checkpoint."""
    out: dict[str, float] = {}
    for frame in (checkpoints, events[events["type"] == "metrics"] if len(events) else events):
        for name in METRIC_COLUMNS:
            values = frame[name].dropna() if name in frame else pd.Series(dtype="float64")
            if len(values):
                out[name] = float(values.iloc[-1])
    return out


def loss_curve_png(checkpoints: pd.DataFrame, events: pd.DataFrame) -> bytes:
    """Train/valid loss and token accuracy by step (from metrics events, else checkpoints)."""
    points = events[events["type"] == "metrics"] if len(events) else events
    if not len(points) or points["step"].isna().all():
        points = checkpoints
    points = points.dropna(subset=["step"]).sort_values("step")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    try:
        for ax, names, title in (
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
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    # Artifact tables must be JSON: stringify timestamps, turn NA into None.
    shown = frame.head(_MAX_ARTIFACT_ROWS).copy()
    if "created_at" in shown:
        shown["created_at"] = shown["created_at"].astype("string")
    return [
        {str(k): (None if pd.isna(v) else v) for k, v in row.items()}
        for row in shown.astype(object).to_dict("records")
    ]


@task(name="collect-metrics", **api_task_options())
def collect_metrics_task(client: MKA1Client, job_id: str, output_dir: Path) -> MetricsResult:
    """Fetch all events and checkpoints of ``job_id`` and write frames (Parquet + CSV) and a PNG."""
    log = _runtime.run_logger()
    publish(ProgressUpdate("metrics", f"collecting metrics of {job_id}", job_id=job_id))
    events = retry_transient(lambda: client.jobs.new_events(job_id, None))
    checkpoints = retry_transient(lambda: list(client.jobs.list_checkpoints(job_id)))
    ck = checkpoints_frame(checkpoints)
    ev = events_frame(events)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "checkpoints_parquet": out / "checkpoints.parquet",
        "checkpoints_csv": out / "checkpoints.csv",
        "events_parquet": out / "events.parquet",
        "events_csv": out / "events.csv",
        "loss_curve_png": out / "loss_curve.png",
    }
    ck.to_parquet(files["checkpoints_parquet"], index=False)
    ck.to_csv(files["checkpoints_csv"], index=False)
    ev.to_parquet(files["events_parquet"], index=False)
    ev.to_csv(files["events_csv"], index=False)
    png = loss_curve_png(ck, ev)
    files["loss_curve_png"].write_bytes(png)
    finals = final_metrics(ck, ev)
    log.info(
        "job %s: %d checkpoints, %d events, final %s -> %s",
        job_id,
        len(ck),
        len(ev),
        ", ".join(f"{k}={v:.4f}" for k, v in finals.items()) or "no metrics",
        out,
    )
    _runtime.table(
        _records(ck), key=_runtime.artifact_key("checkpoints"), description=f"checkpoints of {job_id}"
    )
    metric_events = ev[ev["type"] == "metrics"]
    _runtime.table(
        _records(metric_events),
        key=_runtime.artifact_key("metrics"),
        description=f"metrics events of {job_id}",
    )
    encoded = base64.b64encode(png).decode()
    _runtime.markdown(
        f"### Loss curve of `{job_id}`\n\n![loss curve](data:image/png;base64,{encoded})\n\n"
        f"Saved to `{files['loss_curve_png']}`.\n",
        key=_runtime.artifact_key("loss-curve"),
        description="train/valid loss and token accuracy by step",
    )
    return MetricsResult(
        output_dir=out, files=files, final_metrics=finals, n_checkpoints=len(ck), n_events=len(ev)
    )
