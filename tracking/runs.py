"""Read tracked runs back for ``ftpipe runs``: find them by MLflow run id or job id, their config, final
metrics and metric histories, and an overlaid loss-curve plot. Imports MLflow (callers import this lazily)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tracking.settings import TrackingTarget
from tracking.tracker import experiment_id, open_client

# The config columns a comparison shows first (params as the record logs them).
CONFIG_PARAMS = ("base_model", "method", "seed", "n_epochs", "batch_size", "learning_rate_multiplier", "beta")
FINAL_METRICS = ("train_loss", "valid_loss", "checkpoint.full_valid_loss", "valid_mean_token_accuracy")


class RunNotFound(LookupError):
    """No tracked run has this MLflow run id or job id."""


@dataclass(frozen=True)
class TrackedRunSummary:
    """One tracked run as ``ftpipe runs`` shows it."""

    run_id: str
    name: str
    status: str
    started: datetime | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def job_id(self) -> str | None:
        """The fine-tuning job the run followed, if one was created."""
        return self.tags.get("job_id")

    @property
    def eval_score(self) -> float | None:
        """The eval stage's headline score when it ran (``eval.score``, else the first ``eval.*`` metric)."""
        if "eval.score" in self.metrics:
            return self.metrics["eval.score"]
        scores = [v for k, v in sorted(self.metrics.items()) if k.startswith("eval.")]
        return scores[0] if scores else None


def _summary(run: Any) -> TrackedRunSummary:
    info, data = run.info, run.data
    started = datetime.fromtimestamp(info.start_time / 1000, UTC) if info.start_time else None
    return TrackedRunSummary(
        run_id=info.run_id,
        name=info.run_name or data.tags.get("mlflow.runName", ""),
        status=info.status,
        started=started,
        params=dict(data.params),
        metrics=dict(data.metrics),
        tags={k: v for k, v in data.tags.items() if not k.startswith("mlflow.")},
    )


class RunStore:
    """The tracking store of one target, opened once."""

    def __init__(self, target: TrackingTarget) -> None:
        self.target = target
        self.client = open_client(target)
        self.experiment_id = experiment_id(self.client, target)

    def recent(self, limit: int = 20) -> list[TrackedRunSummary]:
        """The newest runs of the experiment, newest first."""
        runs = self.client.search_runs(
            [self.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit
        )
        return [_summary(r) for r in runs]

    def find(self, ref: str) -> TrackedRunSummary:
        """A run by MLflow run id, else by job id (the newest run that followed that job)."""
        try:
            return _summary(self.client.get_run(ref))
        except Exception:
            pass
        escaped = ref.replace("'", "")
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.job_id = '{escaped}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            raise RunNotFound(ref)
        return _summary(runs[0])

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        """(step, value) of ``metric`` in step order; the last value wins for a repeated step."""
        points = {m.step: m.value for m in sorted(self.client.get_metric_history(run_id, metric), key=_order)}
        return sorted(points.items())


def _order(metric: Any) -> tuple[int, int]:
    return (metric.step, metric.timestamp)


def overlay_png(curves: dict[str, list[tuple[int, float]]], metric: str, title: str | None = None) -> bytes:
    """One line per run: ``metric`` by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        for label, points in curves.items():
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, marker="." if len(points) < 50 else None, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(title or f"{metric} by step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)
