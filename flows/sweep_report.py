"""The sweep's comparison: one row per config -> DataFrame, best pick, plot, files, artifacts and result."""

from __future__ import annotations

import base64
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, Field

from contract.wire import AUTO, CHECKPOINT_METRICS
from flows.params import FineTuneParams
from flows.sweep_config import OVERRIDABLE, SweepConfig
from tasks import runtime
from tasks.record import RunRecord

METRIC_COLUMNS = CHECKPOINT_METRICS
CONFIG_COLUMNS = ("name", *OVERRIDABLE)
# Hyperparameter columns hold numbers; "auto" (the server decides) is NA there, and "auto" again in the
# JSON rows and artifacts, so the frame stays numeric (sortable, plottable, typed in Parquet).
AUTO_COLUMNS = {
    "n_epochs": "Int64",
    "batch_size": "Int64",
    "learning_rate_multiplier": "float64",
}
OUTCOME_COLUMNS = (
    "status",
    *METRIC_COLUMNS,
    "trained_tokens",
    "duration_s",
    "fine_tuned_model",
    "job_id",
    "flow_run_id",
    "error",
)
COLUMNS = (*CONFIG_COLUMNS, *OUTCOME_COLUMNS)
SUCCEEDED = "succeeded"
FAILED = "failed"


@dataclass
class SweepRow:
    """One config's outcome; metrics are None when the run produced none."""

    name: str
    model: str
    n_epochs: int | str
    learning_rate_multiplier: float | str
    batch_size: int | str
    seed: int | None
    suffix: str | None
    status: str = FAILED
    metrics: dict[str, float] = field(default_factory=dict)
    trained_tokens: int | None = None
    duration_s: float | None = None
    fine_tuned_model: str | None = None
    job_id: str | None = None
    flow_run_id: str | None = None
    error: str | None = None

    def record(self) -> dict[str, Any]:
        """Flat dict in ``COLUMNS`` order (metrics spread into their own columns)."""
        flat = asdict(self)
        metrics = flat.pop("metrics")
        flat.update({name: metrics.get(name) for name in METRIC_COLUMNS})
        return {col: flat.get(col) for col in COLUMNS}


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
        """The comparison as a DataFrame (same columns and dtypes as comparison.parquet)."""
        return _typed(pd.DataFrame(self.rows, columns=list(COLUMNS)))


def row_for(cfg: SweepConfig, params: FineTuneParams) -> SweepRow:
    """A config's row before it runs: its values, else ``params``' (the child's, or the base's)."""
    values = {
        key: getattr(cfg, key) if getattr(cfg, key) is not None else getattr(params, key)
        for key in OVERRIDABLE
    }
    return SweepRow(name=str(cfg.name), **values)


def fill_from_result(row: SweepRow, result: RunRecord) -> SweepRow:
    """The row with a finished run's status, final metrics, tokens, duration and model."""
    row.status = SUCCEEDED if result.status == "succeeded" else result.status
    row.metrics = {k: v for k, v in result.final_metrics.items() if k in METRIC_COLUMNS}
    row.trained_tokens = result.trained_tokens
    row.duration_s = result.duration_s
    row.fine_tuned_model = result.fine_tuned_model
    row.job_id = result.job_id
    return row


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for col in (*METRIC_COLUMNS, "duration_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    for col in ("trained_tokens", "seed", "n_epochs", "batch_size"):  # "auto" -> NA
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    frame["learning_rate_multiplier"] = pd.to_numeric(
        frame["learning_rate_multiplier"], errors="coerce"
    ).astype("float64")
    return frame


def comparison_frame(rows: list[SweepRow]) -> pd.DataFrame:
    """The comparison table, one row per config; hyperparameters are numbers, NA where "auto"."""
    return _typed(pd.DataFrame([r.record() for r in rows], columns=list(COLUMNS)))


def pick_best(frame: pd.DataFrame, metric: str, mode: Literal["min", "max"]) -> pd.Series | None:
    """Best succeeded row by ``metric`` (None when no succeeded row has it)."""
    if metric not in frame.columns:
        raise KeyError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_COLUMNS)}")
    ok = frame[(frame["status"] == SUCCEEDED) & frame[metric].notna()]
    if ok.empty:
        return None
    values = ok[metric].to_numpy()
    return ok.iloc[int(values.argmin() if mode == "min" else values.argmax())]


def comparison_png(frame: pd.DataFrame, metric: str) -> bytes:
    """Bar chart of final train loss and the selection metric per config; failed configs are marked."""
    import matplotlib

    matplotlib.use("Agg")  # headless: flows run on workers without a display
    import matplotlib.pyplot as plt

    names = frame["name"].astype(str).tolist()
    xs = list(range(len(names)))
    series = [c for c in dict.fromkeys(("train_loss", metric)) if c in frame.columns]
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names) + 2), 3.6), dpi=100)
    try:
        for i, col in enumerate(series):
            values = [0.0 if pd.isna(v) else float(v) for v in frame[col]]
            ax.bar([x + i * width for x in xs], values, width=width, label=col)
        for x, status in zip(xs, frame["status"], strict=True):
            if status != SUCCEEDED:
                ax.annotate(
                    "failed",
                    (x, 0),
                    rotation=90,
                    va="bottom",
                    ha="left",
                    color="red",
                    fontsize=8,
                )
        ax.set_xticks(
            [x + width * (len(series) - 1) / 2 for x in xs],
            names,
            rotation=30,
            ha="right",
        )
        ax.set_ylabel("final value")
        ax.set_title(f"sweep comparison (select by {metric})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()


def _jsonable(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def table_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Frame rows as JSON-safe dicts (NaN/NA -> None, "auto" in hyperparameter columns)."""
    records = frame.astype(object).to_dict("records")
    rows = [{str(k): _jsonable(v) for k, v in row.items()} for row in records]
    for row in rows:
        row.update({col: AUTO for col in AUTO_COLUMNS if col in row and row[col] is None})
    return rows


def write_outputs(frame: pd.DataFrame, png: bytes, output_dir: Path) -> dict[str, Path]:
    """comparison.csv / comparison.parquet / comparison.png under ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": output_dir / "comparison.csv",
        "parquet": output_dir / "comparison.parquet",
        "plot": output_dir / "comparison.png",
    }
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"], index=False)
    paths["plot"].write_bytes(png)
    return paths


def _fmt(value: Any) -> str:
    value = _jsonable(value)
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def publish_artifacts(
    frame: pd.DataFrame,
    best: pd.Series | None,
    png: bytes,
    metric: str,
    mode: str,
    key: str,
) -> None:
    """Table artifact of the frame and a markdown artifact with the best pick and the embedded plot."""
    runtime.table(
        table_rows(frame),
        key=runtime.artifact_key(key, "table"),
        description="sweep comparison",
    )
    shown = (
        "name",
        "status",
        metric,
        "trained_tokens",
        "duration_s",
        "fine_tuned_model",
        "error",
    )
    header = "| " + " | ".join(shown) + " |\n|" + "---|" * len(shown) + "\n"
    body = "".join("| " + " | ".join(_fmt(row.get(c)) for c in shown) + " |\n" for _, row in frame.iterrows())
    pick = (
        f"**best** ({mode} {metric}): `{best['name']}` = {_fmt(best[metric])}, model `{best['fine_tuned_model']}`"
        if best is not None
        else f"**no succeeded config reported {metric}**"
    )
    img = base64.b64encode(png).decode("ascii")
    text = f"### Sweep comparison\n\n{pick}\n\n{header}{body}\n![comparison](data:image/png;base64,{img})\n"
    runtime.markdown(
        text,
        key=runtime.artifact_key(key, "report"),
        description="sweep report and plot",
    )


def report(
    rows: list[SweepRow],
    name: str,
    select_by: str,
    select_mode: Literal["min", "max"],
    output_dir: Path,
    *,
    started: float,
) -> SweepResult:
    """Compare the rows: frame, best pick, plot, comparison files, artifacts and sweep.json."""
    frame = comparison_frame(rows)
    best = pick_best(frame, select_by, select_mode)
    png = comparison_png(frame, select_by)
    outputs = write_outputs(frame, png, output_dir)
    publish_artifacts(frame, best, png, select_by, select_mode, key=f"sweep-{name}")
    n_ok = int((frame["status"] == SUCCEEDED).sum())
    result = SweepResult(
        name=name,
        rows=table_rows(frame),
        best=table_rows(best.to_frame().T)[0] if best is not None else None,
        select_by=select_by,
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
    return result
