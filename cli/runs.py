"""``ftpipe runs list|compare``: tracked runs from the MLflow store (local by default, see tracking/)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import EXIT_FAILED, EXIT_OK, positive_int

if TYPE_CHECKING:
    from rich.table import Table

    from tracking.runs import TrackedRunSummary

EPILOG = """examples:
  ftpipe runs list
  ftpipe runs compare ftjob_1a2b... ftjob_3c4d...          (job ids or MLflow run ids)
  ftpipe runs compare RUN_A RUN_B --metric valid_loss --output compare.png
  MLFLOW_TRACKING_URI=sqlite:///path/mlflow.db ftpipe runs list
"""
LIST_EPILOG = """examples:
  ftpipe runs list
  ftpipe runs list --limit 50
  MLFLOW_TRACKING_URI=sqlite:///path/mlflow.db ftpipe runs list
"""
COMPARE_EPILOG = """examples:
  ftpipe runs compare ftjob_1a2b... ftjob_3c4d...          (job ids or MLflow run ids)
  ftpipe runs compare RUN_A RUN_B --metric valid_loss --output compare.png
"""


def register(sub: Any) -> None:
    """Add ``runs`` to the command tree."""
    sub.add_parser(
        "runs",
        help="list and compare tracked runs (MLflow)",
        description="Tracked fine-tune runs from the experiment-tracking store (FTPIPE_TRACKING_URI, "
        "MLFLOW_TRACKING_URI, else the local SQLite store under the state dir).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        configure=add_commands,
    )


def add_commands(p: argparse.ArgumentParser) -> None:
    """``runs list`` and ``runs compare``."""
    sub = p.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    listing = sub.add_parser(
        "list",
        help="the newest tracked runs",
        description="The newest tracked runs: config, final metrics and eval score.",
        epilog=LIST_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument("--limit", type=positive_int, default=20, help="show N runs (default: %(default)s)")
    listing.set_defaults(handler=list_command)
    compare = sub.add_parser(
        "compare",
        help="config and final metrics side by side, plus overlaid curves (PNG)",
        description="Config and final metrics of the runs side by side, and one metric's curves overlaid in a PNG.",
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("runs", nargs="+", metavar="RUN_ID", help="MLflow run ids or fine-tuning job ids")
    compare.add_argument("--metric", default="train_loss", help="curve to overlay (default: %(default)s)")
    compare.add_argument(
        "--output", type=Path, default=None, help="PNG path (default: runs/compare-<metric>.png)"
    )
    compare.set_defaults(handler=compare_command)


def _store() -> Any:
    from tracking.runs import RunStore
    from tracking.settings import TrackingSettings, resolve_target

    target = resolve_target(TrackingSettings(enabled=True))
    assert target is not None  # enabled=True always resolves
    return RunStore(target)


def _fmt(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.0f}"
    return value


def runs_table(runs: list[TrackedRunSummary], title: str) -> Table:
    """One row per run: name, ids, config, final metrics, eval score."""
    from rich.table import Table

    from tracking.runs import CONFIG_PARAMS, FINAL_METRICS

    table = Table(title=title)
    for column in ("run", "job", "status", *CONFIG_PARAMS, *FINAL_METRICS, "eval score"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(
            f"{run.name}\n{run.run_id[:12]}",
            run.job_id or "-",
            run.status.lower(),
            *(run.params.get(name, "-") for name in CONFIG_PARAMS),
            *(_fmt(run.metrics.get(name)) for name in FINAL_METRICS),
            _fmt(run.eval_score),
        )
    return table


def list_command(args: argparse.Namespace) -> int:
    """Print the newest runs."""
    from rich.console import Console

    console = Console()
    store = _store()
    runs = store.recent(args.limit)
    if not runs:
        console.print(f"no tracked runs in {store.target.display_uri}", markup=False)
        return EXIT_OK
    console.print(runs_table(runs, f"tracked runs ({store.target.display_uri})"))
    return EXIT_OK


def compare_command(args: argparse.Namespace) -> int:
    """Print the runs side by side and write their overlaid ``--metric`` curves to a PNG."""
    from rich.console import Console

    from tracking.runs import RunNotFound, overlay_png

    console = Console()
    store = _store()
    runs = []
    for ref in args.runs:
        try:
            runs.append(store.find(ref))
        except RunNotFound:
            console.print(
                f"no tracked run with run id or job id {ref!r} in {store.target.display_uri}", markup=False
            )
            return EXIT_FAILED
    console.print(runs_table(runs, f"{len(runs)} runs"))
    curves = {f"{r.name} ({r.job_id or r.run_id[:8]})": store.history(r.run_id, args.metric) for r in runs}
    if not any(curves.values()):
        console.print(f"no {args.metric} history in these runs", markup=False)
        return EXIT_FAILED
    path = (args.output or Path("runs") / f"compare-{args.metric.replace('/', '-')}.png").absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(overlay_png(curves, args.metric))
    console.print(f"{args.metric} curves: {path}", markup=False, soft_wrap=True)
    return EXIT_OK
