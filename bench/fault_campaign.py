"""Fault campaign: run the pipeline against a backend injecting faults, in three modes, and audit the server.

* ``flow``: ``--runs`` fine-tune flow runs one after another, in process, each its own end user.
* ``concurrent``: ``--rounds`` rounds of ``--launches`` identical flow runs started together (same end user,
  same dataset, so the same upload and job keys); even rounds share one state dir (one machine: the per-key
  lock decides), odd rounds give each launch its own (several machines: the server's Idempotency-Key decides).
* ``cli``: ``--cli-runs`` ``ftpipe run`` subprocesses one after another, start-up probe included (``MKA1_BASE_URL``
  points at the faulty backend; the subprocesses share this process's Prefect test server).

The backend fails ``--rate`` of every route group's requests with all fault kinds (seeded). Afterwards the
server is read with faults paused: per mode, runs, succeeded, duplicate files (beyond train + validation per
end user), duplicate jobs (beyond one per end user) and checkpoint rows missing from a run's parquet are
counted. The bad-input corpus (tests/data/bad) is also validated: tried / rejected with a located message.

    python bench/fault_campaign.py [--runs 2] [--rounds 2] [--launches 4] [--cli-runs 2] [--rate 0.35] [--seed 1234]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
# Experiment tracking is not under test here, and would write every campaign run into the user's MLflow store.
os.environ.setdefault("FTPIPE_TRACKING_ENABLED", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
from prefect.settings import get_current_settings  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from backend.launcher import RunningBackend, start_backend  # noqa: E402
from backend.settings import BackendSettings  # noqa: E402
from flows.fine_tune import fine_tune  # noqa: E402
from flows.params import FineTuneParams  # noqa: E402
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
DATASET_FILES = 2  # train + validation: what one end user's server listing holds when nothing is duplicated
PROBE_PATH = "/models/local:micro-chat"  # ftpipe run's start-up probe (GET /models/{id})


@dataclass
class Mode:
    """What one campaign mode saw."""

    name: str
    runs: int = 0
    succeeded: int = 0
    duplicate_files: int = 0
    duplicate_jobs: int = 0
    lost_checkpoint_rows: int = 0
    faults: int = 0
    probe_faults: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _lost_rows(written: Path, server: pd.DataFrame | None) -> int:
    """Server checkpoint rows (by id) absent from, or different in, the flow's parquet."""
    if server is None or server.empty:
        return 0
    if not written.exists():
        return len(server)
    mine = pd.read_parquet(written)
    merged = server.merge(mine, how="left", on=list(server.columns), indicator=True)
    return int((merged["_merge"] == "left_only").sum())


def audit(mode: Mode, rb: RunningBackend, user: str, outputs: list[Path]) -> None:
    """Count the end user's duplicate files and jobs, and each run's lost checkpoint rows."""
    view = server_view(rb, user)
    mode.duplicate_files += max(0, len(view.training_files) - DATASET_FILES)
    mode.duplicate_jobs += max(0, len(view.jobs) - 1)
    mode.lost_checkpoint_rows += sum(
        _lost_rows(out / "checkpoints.parquet", view.checkpoints) for out in outputs
    )


def _flow(params: FineTuneParams) -> tuple[bool, str]:
    try:
        result = fine_tune(**params.flow_arguments())
    except Exception as exc:  # a failed run is a result of the campaign, not a crash of it
        return False, f"{type(exc).__name__}: {exc}"[:200]
    return result.status == "succeeded", "" if result.status == "succeeded" else f"status {result.status}"


def _record(mode: Mode, ok: bool, seconds: float, error: str) -> None:
    mode.runs += 1
    mode.succeeded += ok
    mode.seconds.append(seconds)
    if error:
        mode.errors.append(error)


def flow_mode(rb: RunningBackend, data: Path, root: Path, runs: int, console: Console) -> Mode:
    """Flow runs one after another, each its own end user."""
    mode = Mode("flow")
    for i in range(runs):
        user, work = f"campaign-{i}", root / f"flow{i}"
        started = time.perf_counter()
        ok, error = _flow(flow_params(data, work, rb, user))
        _record(mode, ok, time.perf_counter() - started, error)
        audit(mode, rb, user, [work / "out"])
        console.print(f"flow run {i}: {'ok' if ok else 'FAILED ' + error} in {mode.seconds[-1]:.0f}s")
    return mode


def _together(runs: list[FineTuneParams]) -> list[tuple[bool, float, str]]:
    """Start every flow run in its own thread, released together by one barrier: (ok, seconds, error) each."""
    gate = threading.Barrier(len(runs))
    outcomes: list[tuple[bool, float, str]] = []

    def launch(params: FineTuneParams) -> None:
        gate.wait()
        started = time.perf_counter()
        ok, error = _flow(params)
        outcomes.append((ok, time.perf_counter() - started, error))

    threads = [threading.Thread(target=launch, args=(params,)) for params in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def concurrent_mode(
    rb: RunningBackend, data: Path, root: Path, rounds: int, launches: int, console: Console
) -> Mode:
    """Rounds of identical flow runs released together (one end user per round)."""
    mode = Mode("concurrent")
    for r in range(rounds):
        user, shared = f"concurrent-{r}", r % 2 == 0
        works = [root / f"round{r}-launch{i}" for i in range(launches)]
        runs = [
            flow_params(data, work, rb, user).model_copy(
                update={"state_dir": root / f"round{r}-state" if shared else work / "state"}
            )
            for work in works
        ]
        outcomes = _together(runs)
        for ok, seconds, error in outcomes:
            _record(mode, ok, seconds, error)
        audit(mode, rb, user, [work / "out" for work in works])
        console.print(
            f"round {r} ({'one state dir' if shared else 'own state dirs'}): "
            f"{sum(o[0] for o in outcomes)}/{launches} ok, "
            f"{mode.duplicate_files} duplicate files, {mode.duplicate_jobs} duplicate jobs so far"
        )
    return mode


def cli_mode(rb: RunningBackend, root: Path, runs: int, console: Console) -> Mode:
    """``ftpipe run`` subprocesses one after another; success is exit 0 with a succeeded result.json."""
    mode = Mode("cli")
    # ftpipe run exits 1 when a smoke check fails; micro-chat's answers are not what is measured here.
    data = small_dataset(root / "cli-ds")
    (data / "smoke.jsonl").write_text('{"prompt": "Where is my order A-12345?"}\n', encoding="utf-8")
    env = {
        **os.environ,
        "MKA1_BASE_URL": rb.base_url,
        "MKA1_API_KEY": rb.api_key.get_secret_value(),
        "MKA1_TIMEOUT_S": str(CLIENT_TIMEOUT_S),
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    for i in range(runs):
        user, work = f"cli-{i}", root / f"cli{i}"
        argv = [
            *("run", str(data), "--model", "local:micro-chat", "--epochs", "2", "--batch-size", "4"),
            *("--seed", "7", "--no-eval", "--output", str(work / "out"), "--state-dir", str(work / "state")),
            *("--on-behalf-of", user, "--poll-interval", "0.2", "--poll-max-interval", "1", "--quiet"),
        ]
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "cli", *argv], env=env, capture_output=True, text=True, timeout=900
        )
        result = work / "out" / "result.json"
        status = json.loads(result.read_text(encoding="utf-8"))["status"] if result.exists() else "no result"
        ok = proc.returncode == 0 and status == "succeeded"
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
        _record(
            mode, ok, time.perf_counter() - started, "" if ok else f"exit {proc.returncode}: {tail[0]}"[:200]
        )
        audit(mode, rb, user, [work / "out"])
        console.print(
            f"cli run {i}: {'ok' if ok else 'FAILED ' + mode.errors[-1]} in {mode.seconds[-1]:.0f}s"
        )
    return mode


def _faults_between(mode: Mode, before: dict[str, Any], after: dict[str, Any]) -> None:
    for group, counts in after["injected"].items():
        for kind, n in counts.items():
            mode.kinds[kind] += n - before["injected"].get(group, {}).get(kind, 0)
    mode.faults = after["total_injected"] - before["total_injected"]
    recent = after["recent"][-mode.faults :] if mode.faults else []
    mode.probe_faults = sum(1 for r in recent if r.split(" ", 2)[-1].endswith(PROBE_PATH))


def bad_corpus() -> tuple[int, int]:
    """(files tried, files rejected with a located message) over tests/data/bad.

    Located: ``file:line: field`` for a line's problem; a whole-file problem names the file and the message.
    """
    expected = json.loads((BAD / "EXPECTED.json").read_text(encoding="utf-8"))
    located = 0
    for name, exp in expected.items():
        report = validate_file(BAD / name, **exp["options"])
        texts = [str(i) for i in report.errors]
        if exp["line"]:
            hit = any(t.startswith(f"{BAD / name}:{exp['line']}: {exp['field']}") for t in texts)
        else:
            hit = any(t.startswith(f"{BAD / name}: ") and exp["message"] in t for t in texts)
        located += not report.ok and hit
    return len(expected), located


def main() -> int:
    """Run the campaign and print one table, a column per mode."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2, help="sequential flow runs")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of concurrent identical launches")
    ap.add_argument("--launches", type=int, default=4, help="identical launches per round")
    ap.add_argument("--cli-runs", type=int, default=2, help="sequential `ftpipe run` subprocesses")
    ap.add_argument("--rate", type=float, default=0.35, help="fault rate of every route group")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    console = Console()
    modes: list[Mode] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
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
            plan = [
                (args.runs, lambda: flow_mode(rb, data, root, args.runs, console)),
                (args.rounds, lambda: concurrent_mode(rb, data, root, args.rounds, args.launches, console)),
                (args.cli_runs, lambda: cli_mode(rb, root, args.cli_runs, console)),
            ]
            for count, run_mode in plan:
                if count <= 0:
                    continue
                before = fault_stats(rb)
                mode = run_mode()
                _faults_between(mode, before, fault_stats(rb))
                modes.append(mode)
    tried, located = bad_corpus()
    table = Table(
        title=f"fault campaign: {args.rate:.0%} faults on every route group, all kinds, seed {args.seed} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    table.add_column("measure")
    for mode in modes:
        table.add_column(mode.name, justify="right")
    rows: list[tuple[str, list[str]]] = [
        ("runs", [str(m.runs) for m in modes]),
        ("succeeded", [str(m.succeeded) for m in modes]),
        ("duplicate files", [str(m.duplicate_files) for m in modes]),
        ("duplicate jobs", [str(m.duplicate_jobs) for m in modes]),
        ("lost checkpoint rows", [str(m.lost_checkpoint_rows) for m in modes]),
        ("faults injected", [str(m.faults) for m in modes]),
        ("  of them on the start-up probe", [str(m.probe_faults) for m in modes]),
        ("mean run time", [f"{sum(m.seconds) / max(1, len(m.seconds)):.0f} s" for m in modes]),
    ]
    for name, values in rows:
        table.add_row(name, *values)
    console.print(table)
    for mode in modes:
        kinds = ", ".join(f"{k}={n}" for k, n in sorted(mode.kinds.items()) if n)
        console.print(f"{mode.name} faults by kind: {kinds}", highlight=False)
    console.print(f"bad inputs tried / rejected with a located message: {tried} / {located}")
    for mode in modes:
        for error in Counter(mode.errors).most_common(3):
            console.print(f"[red]{mode.name}: {error[1]} x {error[0]}[/red]", highlight=False)
    clean = all(
        m.succeeded == m.runs and not (m.duplicate_files or m.duplicate_jobs or m.lost_checkpoint_rows)
        for m in modes
    )
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
