"""Tracking overhead: the ``fine_tune`` flow on the sample job with MLflow tracking off vs on (local SQLite).

Both arms run against one embedded backend after a warm-up job (worker torch import, base model build) and
a warm-up tracked run (the SQLite store's one-time table creation), alternating order over ``--repeats``
pairs; each run is its own end user, so nothing is re-attached. Besides the wall times it reports the time
the flow's own thread spent in tracking calls (everything else runs on the tracker's background thread).

    python bench/tracking_overhead.py [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from common import Row, add_common_args, row, write_rows  # noqa: E402
from rich.console import Console  # noqa: E402

from backend.launcher import start_backend  # noqa: E402
from backend.settings import BackendSettings  # noqa: E402
from flows import experiment  # noqa: E402
from flows.fine_tune import fine_tune  # noqa: E402
from flows.params import FineTuneParams  # noqa: E402
from tracking.settings import TrackingSettings, resolve_target  # noqa: E402
from tracking.tracker import experiment_id, open_client  # noqa: E402

_in_tracking: list[float] = []


def _timed(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _in_tracking.append(time.perf_counter() - started)

    return wrapper


# Every call the flow's thread makes into the experiment side.
for _name in ("begin", "job_created", "observe", "succeeded", "ended_without_success"):
    setattr(experiment.ExperimentRun, _name, _timed(getattr(experiment.ExperimentRun, _name)))
_prepare = experiment.ExperimentRun.__dict__["prepare"].__func__
experiment.ExperimentRun.prepare = classmethod(_timed(_prepare))  # type: ignore[method-assign,assignment]


def run_once(dataset: Path, tmp: Path, tracked: bool, tag: str) -> tuple[float, float]:
    """Wall time of one flow run and the time its own thread spent in tracking calls."""
    os.environ["FTPIPE_TRACKING_ENABLED"] = "true" if tracked else "false"
    params = FineTuneParams(
        dataset_dir=dataset,
        seed=42,
        poll_interval_s=0.5,
        poll_max_interval_s=0.5,
        output_dir=tmp / f"out-{tag}",
        state_dir=tmp / f"state-{tag}",
        on_behalf_of=f"bench-{tag}-{uuid.uuid4().hex[:8]}",
    )
    _in_tracking.clear()
    started = time.perf_counter()
    record = fine_tune(**params.flow_arguments())
    wall = time.perf_counter() - started
    assert record.status == "succeeded"
    assert (record.tracking is not None) == tracked, "tracking did not do what the arm asked"
    return wall, sum(_in_tracking)


def main() -> None:
    """Alternate untracked/tracked runs and print medians, the ratio and the in-flow tracking time."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=Path("datasets/customer-support"))
    ap.add_argument("--repeats", type=int, default=2, help="pairs; the order alternates")
    add_common_args(ap, quick=False)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="ftpipe-bench-tracking-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
        data_dir = tmp / "backend"
        with start_backend(BackendSettings(data_dir=data_dir, port=0)) as rb:
            os.environ["FTPIPE_BACKEND_DATA_DIR"] = str(data_dir)
            os.environ["FTPIPE_BACKEND_PORT"] = str(rb.port)
            target = resolve_target(TrackingSettings(enabled=True))
            assert target is not None
            experiment_id(open_client(target), target)  # the store's one-time table creation, not counted
            warm, _ = run_once(args.dataset, tmp, False, "warm")
            console.print(f"warm-up (worker start-up; not counted): {warm:.1f}s")
            times: dict[bool, list[float]] = {False: [], True: []}
            in_flow: list[float] = []
            for i in range(args.repeats):
                for tracked in (False, True) if i % 2 == 0 else (True, False):
                    wall, spent = run_once(args.dataset, tmp, tracked, f"{i}-{tracked}")
                    times[tracked].append(wall)
                    if tracked:
                        in_flow.append(spent)
                    spent_note = f" (flow thread in tracking calls {spent:.2f}s)" if tracked else ""
                    console.print(
                        f"pair {i + 1}: tracking {'on ' if tracked else 'off'} {wall:.2f}s{spent_note}"
                    )
    off, on = statistics.median(times[False]), statistics.median(times[True])
    spent = statistics.median(in_flow)
    console.print(
        f"sample job: tracking off {off:.2f}s, on {on:.2f}s (median of {args.repeats}); "
        f"ratio {on / off:.3f}; flow-thread time in tracking calls {spent:.2f}s ({100 * spent / off:.2f}%)"
    )
    rows: list[Row] = [
        row(
            "tracking", "sample job wall s, tracking on vs off", on, off, direction="<=", limit=1.02, unit="s"
        ),
        row(
            "tracking",
            "flow-thread s in tracking calls vs untracked wall",
            spent,
            off,
            direction="<=",
            limit=0.02,
            unit="s",
        ),
    ]
    write_rows(args.json, rows)


if __name__ == "__main__":
    main()
