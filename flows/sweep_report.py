"""The sweep's comparison: one row per config -> DataFrame, best pick, plot, files and artifacts."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from contract.wire import CHECKPOINT_METRICS
from tasks import runtime

METRIC_COLUMNS = CHECKPOINT_METRICS
CONFIG_COLUMNS = ("name", "model", "n_epochs", "learning_rate_multiplier", "batch_size", "seed", "suffix")
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


def comparison_frame(rows: list[SweepRow]) -> pd.DataFrame:
    """The comparison table; mixed ``auto``/number hyperparameter columns stay as strings."""
    frame = pd.DataFrame([r.record() for r in rows], columns=list(COLUMNS))
    for col in (*METRIC_COLUMNS, "duration_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame["trained_tokens"] = pd.to_numeric(frame["trained_tokens"], errors="coerce").astype("Int64")
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    for col in ("n_epochs", "learning_rate_multiplier", "batch_size"):
        # "auto" next to numbers: one string dtype keeps Parquet happy and the table readable.
        frame[col] = frame[col].map(str).astype("string")
    return frame


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
                ax.annotate("failed", (x, 0), rotation=90, va="bottom", ha="left", color="red", fontsize=8)
        ax.set_xticks([x + width * (len(series) - 1) / 2 for x in xs], names, rotation=30, ha="right")
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
    """Frame rows as JSON-safe dicts (NaN/NA -> None) for artifacts and results."""
    records = frame.astype(object).to_dict("records")
    return [{str(k): _jsonable(v) for k, v in row.items()} for row in records]


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
    frame: pd.DataFrame, best: pd.Series | None, png: bytes, metric: str, mode: str, key: str
) -> None:
    """Table artifact of the frame and a markdown artifact with the best pick and the embedded plot."""
    runtime.table(table_rows(frame), key=runtime.artifact_key(key, "table"), description="sweep comparison")
    shown = ("name", "status", metric, "trained_tokens", "duration_s", "fine_tuned_model", "error")
    header = "| " + " | ".join(shown) + " |\n|" + "---|" * len(shown) + "\n"
    body = "".join("| " + " | ".join(_fmt(row.get(c)) for c in shown) + " |\n" for _, row in frame.iterrows())
    pick = (
        f"**best** ({mode} {metric}): `{best['name']}` = {_fmt(best[metric])}, model `{best['fine_tuned_model']}`"
        if best is not None
        else f"**no succeeded config reported {metric}**"
    )
    img = base64.b64encode(png).decode("ascii")
    text = f"### Sweep comparison\n\n{pick}\n\n{header}{body}\n![comparison](data:image/png;base64,{img})\n"
    runtime.markdown(text, key=runtime.artifact_key(key, "report"), description="sweep report and plot")
