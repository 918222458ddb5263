"""Fault campaign: run the fine-tune flow N times against a backend injecting faults, print what survived.

Each run uses its own end user (X-On-Behalf-Of) and state dir, so every upload and job is new; the backend
fails ``--rate`` of every route group's requests with all fault kinds (seeded). Afterwards the server is
read with faults paused: duplicate files/jobs and checkpoint rows missing from the flow's parquet are
counted. The bad-input corpus (tests/data/bad) is also validated: tried / rejected with a located message.

    python bench/fault_campaign.py [--runs 5] [--rate 0.2] [--seed 1234]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from backend.launcher import RunningBackend, start_backend  # noqa: E402
from backend.settings import BackendSettings  # noqa: E402
from flows.fine_tune import fine_tune  # noqa: E402
from tests.reliability.reliability_kit import (  # noqa: E402
    CLIENT_TIMEOUT_S,
    SLOW_S,
    fault_stats,
    flow_params,
    server_view,
    small_dataset,
)
from validation import validate_file  # noqa: E402

BAD = REPO / "tests" / "data" / "bad"


@dataclass
class RunOutcome:
    """One flow run under faults."""

    ok: bool
    seconds: float
    faults: int
    kinds: Counter[str]
    duplicate_files: int
    duplicate_jobs: int
    lost_checkpoint_rows: int
    error: str = ""


def _lost_rows(written: Path, server: pd.DataFrame | None) -> int:
    """Server checkpoint rows (by id) absent from, or different in, the flow's parquet."""
    if server is None or server.empty:
        return 0
    if not written.exists():
        return len(server)
    mine = pd.read_parquet(written)
    merged = server.merge(mine, how="left", on=list(server.columns), indicator=True)
    return int((merged["_merge"] == "left_only").sum())


def one_run(rb: RunningBackend, data: Path, work: Path, user: str) -> RunOutcome:
    """Run the flow once and audit the server afterwards."""
    before = fault_stats(rb)
    started = time.perf_counter()
    error = ""
    try:
        result = fine_tune(**flow_params(data, work, rb, user).flow_arguments())
        ok = result.status == "succeeded"
    except Exception as exc:  # a failed run is a result of the campaign, not a crash of it
        ok, error = False, f"{type(exc).__name__}: {exc}"[:200]
    seconds = time.perf_counter() - started
    after = fault_stats(rb)
    kinds: Counter[str] = Counter()
    for group, counts in after["injected"].items():
        for kind, n in counts.items():
            kinds[kind] += n - before["injected"].get(group, {}).get(kind, 0)
    view = server_view(rb, user)
    return RunOutcome(
        ok=ok,
        seconds=seconds,
        faults=after["total_injected"] - before["total_injected"],
        kinds=kinds,
        duplicate_files=max(0, len(view.training_files) - 2),
        duplicate_jobs=max(0, len(view.jobs) - 1),
        lost_checkpoint_rows=_lost_rows(work / "out" / "checkpoints.parquet", view.checkpoints),
        error=error,
    )


def bad_corpus() -> tuple[int, int]:
    """(files tried, files rejected with a file:line: field message) over tests/data/bad."""
    expected = json.loads((BAD / "EXPECTED.json").read_text(encoding="utf-8"))
    located = 0
    for name, exp in expected.items():
        report = validate_file(BAD / name, **exp["options"])
        prefix = f"{BAD / name}:{exp['line'] or 0}: {exp['field']}"
        if not report.ok and any(str(i).startswith(prefix) for i in report.errors):
            located += 1
    return len(expected), located


def main() -> int:
    """Run the campaign and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rate", type=float, default=0.2, help="fault rate of every route group")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    console = Console()
    outcomes: list[RunOutcome] = []
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=60):
        root = Path(tmp)
        data = small_dataset(root / "ds")
        settings = BackendSettings(
            data_dir=root / "backend",
            fault_rates=f"all={args.rate}",
            fault_seed=args.seed,
            fault_slow_s=SLOW_S,
            fault_retry_after_s=0.2,
            metrics_every_n_steps=2,
        )
        with start_backend(settings, port=0) as rb:
            os.environ["MKA1_API_KEY"] = rb.api_key.get_secret_value()
            os.environ["MKA1_TIMEOUT_S"] = str(CLIENT_TIMEOUT_S)
            for i in range(args.runs):
                out = one_run(rb, data, root / f"run{i}", f"campaign-{i}")
                outcomes.append(out)
                console.print(
                    f"run {i}: {'ok' if out.ok else 'FAILED ' + out.error} in {out.seconds:.0f}s, "
                    f"{out.faults} faults {dict(out.kinds)}"
                )
    tried, located = bad_corpus()
    kinds: Counter[str] = Counter()
    for o in outcomes:
        kinds.update(o.kinds)
    table = Table(
        title=f"fault campaign: {args.runs} runs, {args.rate:.0%} faults on every route, seed {args.seed}"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("flow runs succeeded", f"{sum(o.ok for o in outcomes)} / {len(outcomes)}"),
        ("faults injected (all runs)", str(sum(o.faults for o in outcomes))),
        ("faults survived (in succeeded runs)", str(sum(o.faults for o in outcomes if o.ok))),
        ("  by kind", ", ".join(f"{k}={n}" for k, n in sorted(kinds.items()))),
        ("duplicate files", str(sum(o.duplicate_files for o in outcomes))),
        ("duplicate jobs", str(sum(o.duplicate_jobs for o in outcomes))),
        ("lost checkpoint rows", str(sum(o.lost_checkpoint_rows for o in outcomes))),
        ("mean run time under faults", f"{sum(o.seconds for o in outcomes) / max(1, len(outcomes)):.0f} s"),
        ("bad inputs tried / rejected with file:line: field", f"{tried} / {located}"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
