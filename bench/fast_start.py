"""Fast start: what ``ftpipe run`` costs around the training, with ftpipe's local services kept warm.

Every figure is the wall time of a real ``ftpipe run`` subprocess (command to printed summary) against the
embedded backend, in temp state/services/data/Prefect-home folders, with ``FTPIPE_SERVICES_KEEP=true``:

1. the services (warm runner, local Prefect server, embedded backend) are started once and timed (the one-off
   cost); with ``--no-runner``, no warm runner (``FTPIPE_SERVICES_RUNNER=false``: each run imports everything);
2. the sample job is run: its wall time over its training time (the job's own timestamps, from
   ``result.json``), target <= 1.15x;
3. the same command again, as a user re-runs it: nothing changed, so it is answered from the state dir's
   finished-runs ledger without a flow (one GET of the job); its wall time, median of ``--reruns``, target
   < 3 s. Beside it, the same re-run forced through the flow (``--rerun``: it re-attaches to the finished
   job, uploads and trains nothing), with the services warm and, the baseline, with
   ``FTPIPE_SERVICES_KEEP=false`` (a Prefect server started for the run, as before services were kept);
4. ``--warm-runs`` more jobs (other seeds: each trains) with everything warm, as a user's next runs are.

For each job run it prints where the wall time went, from the run's own log timestamps (what the user sees):
pre-flow (command start to "Beginning flow run": Python, imports or the runner's fork, preflight, flow run creation), before
training (validate, estimate, uploads, job create, queued, until the client sees "Training started"),
training (until the client sees the job succeeded) and after training (metrics, smoke/eval, summary, exit).

    python bench/fast_start.py                    # the sample job as `ftpipe run datasets/customer-support`
    python bench/fast_start.py --quick --json out.json    # the sample data, 1 epoch, no eval stage
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from common import Row, add_common_args, row, write_rows
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
RERUN_TARGET_S = 3.0
RATIO_TARGET = 1.15

# Starts the services the way a run does, then leaves them running (they are kept): the warm runner first
# (alone, so its start-up time is its own; runs after it are served by it), then the backend and Prefect.
WARM_UP = """
import os, time
from services.runner import code_root, runner_key, services_root
from services.runner_host import start_runner, wait_ready
t = time.perf_counter()
env, cwd = dict(os.environ), os.getcwd()
runner_s = float("nan")
if env.get("FTPIPE_SERVICES_RUNNER") != "false":
    pid = start_runner(env, cwd, runner_key(env, cwd, code_root()), "bench warm-up", 900.0)
    if pid is None or wait_ready(services_root(env), pid, 300.0) is None:
        raise SystemExit("the warm runner did not start")
    runner_s = time.perf_counter() - t
t = time.perf_counter()
from flows.backend_runtime import open_connection
with open_connection():
    backend_s = time.perf_counter() - t
t = time.perf_counter()
from services.prefect_api import prefect_api_for_run
with prefect_api_for_run("bench warm-up"):
    prefect_s = time.perf_counter() - t
print(runner_s, backend_s, prefect_s)
"""


def _env(tmp: Path, keep: bool, runner: bool = True) -> dict[str, str]:
    from backend.launcher import free_port

    env = dict(os.environ)
    for name in ("PREFECT_API_URL", "MKA1_API_KEY", "MKA1_BASE_URL", "FTPIPE_BACKEND_API_KEY"):
        env.pop(name, None)
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
        FTPIPE_STATE_DIR=str(tmp / "state"),
        FTPIPE_SERVICES_DIR=str(tmp / "services"),
        FTPIPE_SERVICES_KEEP="true" if keep else "false",
        FTPIPE_SERVICES_RUNNER="true" if runner else "false",
        FTPIPE_SERVICES_IDLE_TIMEOUT_S="900",
        FTPIPE_BACKEND_DATA_DIR=str(tmp / "backend"),
        FTPIPE_BACKEND_PORT=env.get("FTPIPE_BENCH_BACKEND_PORT", str(free_port())),
        PREFECT_HOME=str(tmp / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        FTPIPE_TRACKING_ENABLED=env.get("FTPIPE_TRACKING_ENABLED", "false"),
    )
    return env


# Prefect's console lines start "HH:MM:SS.mmm | LEVEL | ..." (local time); these mark the phases' ends.
_LOG_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \|")
_MARKS = (
    ("pre-flow", "Beginning flow run"),
    ("before training", "] Training started"),
    ("training", " is succeeded"),
)
PHASES = (*(name for name, _ in _MARKS), "after training")


def phase_seconds(output: str, started: datetime, ended: datetime) -> dict[str, float]:
    """Seconds per phase of one run, from its log lines' timestamps (the first line holding each mark)."""
    ends: list[datetime] = []
    lines = output.splitlines()
    for name, mark in _MARKS:
        line = next((ln for ln in lines if mark in ln and _LOG_TIME.match(ln)), None)
        if line is None:
            raise SystemExit(f"no log line with {mark!r} ({name}) in the run's output")
        m = _LOG_TIME.match(line)
        assert m is not None
        h, mi, sec, ms = (int(g) for g in m.groups())
        at = started.replace(hour=h, minute=mi, second=sec, microsecond=ms * 1000)
        if at < started - timedelta(hours=1):  # the run went past midnight
            at += timedelta(days=1)
        ends.append(at)
    bounds = [started, *ends, ended]
    return {name: (b - a).total_seconds() for name, a, b in zip(PHASES, bounds[:-1], bounds[1:], strict=True)}


def _timed(argv: list[str], env: dict[str, str], console: Console) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        console.print(proc.stdout[-2000:], proc.stderr[-3000:], markup=False)
        raise SystemExit(f"{shlex.join(argv)} exited {proc.returncode}")
    return elapsed, proc.stdout + proc.stderr


def _job_run(
    argv: list[str], env: dict[str, str], console: Console, log: Path | None = None
) -> tuple[float, dict[str, float]]:
    """Wall time of a run that trains, and its phases (printed); its output is kept in ``log`` when given."""
    started = datetime.now()
    wall, output = _timed([*argv, "--progress", "plain"], env, console)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output)
    phases = phase_seconds(output, started, started + timedelta(seconds=wall))
    console.print("  " + ", ".join(f"{name} {s:.1f}s" for name, s in phases.items()))
    # Each model's eval time ("<model> (<role>): N answer(s) in X s, ..."): the after-training phase's core.
    for line in output.splitlines():
        if " answer(s) in " in line and _LOG_TIME.match(line):
            console.print("  eval: " + line.rsplit(" - ", 1)[-1], markup=False, highlight=False)
    return wall, phases


def _phase_rows(label: str, phases: dict[str, float], training_s: float) -> list[Row]:
    return [
        row("fast_start", f"{label}: {name}, s", s, unit="s", note="from the run's log timestamps")
        for name, s in phases.items()
    ] + [
        row(
            "fast_start",
            f"{label}: everything but training, s",
            sum(phases.values()) - training_s,
            unit="s",
            note="wall minus the job's own training time",
        )
    ]


def _secs(values: list[float]) -> str:
    return ", ".join(f"{x:.2f}s" for x in values)


def _unchanged_rerun(argv: list[str], env: dict[str, str], console: Console) -> float:
    """Wall time of a re-run that must be answered without the flow (else the figure would mean another thing)."""
    wall, output = _timed(argv, env, console)
    if not output.startswith("unchanged since run "):
        console.print(output[-3000:], markup=False)
        raise SystemExit("the re-run ran the flow instead of reporting the unchanged finished run")
    return wall


def _training_s(output_dir: Path) -> float:
    result = output_dir / "result.json"
    data = json.loads(result.read_text())
    actual = (data.get("estimate") or {}).get("actual_duration_s")
    if not actual:
        raise SystemExit(f"{result}: no training time recorded (estimate.actual_duration_s)")
    return float(actual)


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements; exit 1 when a target is missed."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=REPO / "datasets" / "customer-support")
    ap.add_argument("--reruns", type=int, default=3, help="re-runs to take the median of (default 3)")
    ap.add_argument("--run-args", default="", help="extra `ftpipe run` options, e.g. '--epochs 1'")
    ap.add_argument(
        "--warm-runs", type=int, default=1, help="jobs trained after the first, services warm (default 1)"
    )
    ap.add_argument("--logs", type=Path, default=None, help="keep each training run's output in this folder")
    ap.add_argument(
        "--no-runner",
        action="store_true",
        help="no warm runner: every run imports Python, Prefect and ftpipe",
    )
    add_common_args(ap)
    args = ap.parse_args(argv)
    console = Console(width=160)
    extra = shlex.split(args.run_args) + (["--epochs", "1", "--no-eval"] if args.quick else [])
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ftpipe-fast-start-") as tmp_name:
        tmp = Path(tmp_name)
        env = _env(tmp, keep=True, runner=not args.no_runner)
        out = tmp / "out"

        def command(output: Path) -> list[str]:
            return [sys.executable, "-m", "cli", "run", str(args.dataset), "--output", str(output), *extra]

        cmd = command(out)
        try:
            warm = subprocess.run(
                [sys.executable, "-c", WARM_UP], env=env, capture_output=True, text=True, check=True
            )
            runner_s, backend_s, prefect_s = (float(x) for x in warm.stdout.split())
            console.print(
                f"services started: warm runner {runner_s:.1f}s, backend {backend_s:.1f}s, "
                f"Prefect server {prefect_s:.1f}s"
            )

            logs: Path | None = args.logs
            wall, phases = _job_run(cmd, env, console, logs / "first.log" if logs else None)
            training = _training_s(out)
            console.print(f"sample job: {wall:.1f}s command to summary, {training:.0f}s training")
            phase_rows = _phase_rows("first job after the services start", phases, training)
            for i in range(args.warm_runs):
                warm_out = tmp / f"out-warm-{i}"
                warm_cmd = [*command(warm_out), "--seed", str(1000 + i)]  # the last --seed wins
                warm_log = logs / f"warm-{i + 1}.log" if logs else None
                warm_wall, warm_phases = _job_run(warm_cmd, env, console, warm_log)
                warm_training = _training_s(warm_out)
                console.print(f"warm job {i + 1}: {warm_wall:.1f}s, {warm_training:.0f}s training")
                phase_rows.append(
                    row(
                        "fast_start",
                        f"warm job {i + 1} command-to-summary vs training time",
                        warm_wall,
                        warm_training,
                        direction="<=",
                        limit=RATIO_TARGET,
                        unit="s",
                        note="services, backend and its worker warm; another seed, so it trains",
                    )
                )
                phase_rows += _phase_rows(f"warm job {i + 1}", warm_phases, warm_training)

            reruns = [_unchanged_rerun(cmd, env, console) for _ in range(args.reruns)]
            console.print("re-runs (unchanged: no flow): " + _secs(reruns))
            forced = [*cmd, "--rerun"]
            flow = [_timed(forced, env, console)[0] for _ in range(max(1, args.reruns // 2))]
            console.print("re-runs through the flow (--rerun, warm services): " + _secs(flow))
            cold_env = {**env, "FTPIPE_SERVICES_KEEP": "false"}
            # The baseline re-runs against the same kept backend (same data dir): only Prefect is per-run.
            cold = [_timed(forced, cold_env, console)[0] for _ in range(max(1, args.reruns // 2))]
            console.print("re-runs through the flow (--rerun, Prefect server per run): " + _secs(cold))
        finally:
            subprocess.run(
                [sys.executable, "-m", "cli", "services", "stop"], env=env, capture_output=True, check=False
            )
        rerun = statistics.median(reruns)
        label = "1 epoch, no eval" if args.quick else "as `ftpipe run DIR` trains it"
        rows += [
            row(
                "fast_start",
                "re-run of an unchanged finished run, wall s (no flow vs the flow with a Prefect server per run)",
                rerun,
                statistics.median(cold),
                unit="s",
                note=f"median of {len(reruns)}; target < {RERUN_TARGET_S:g} s on `ours`",
            ),
            row(
                "fast_start",
                "re-run wall s (unchanged: answered from the state dir, no flow)",
                rerun,
                direction="<=",
                limit=RERUN_TARGET_S,
                unit="s",
            ),
            row(
                "fast_start",
                "re-run forced through the flow (--rerun: re-attaches), wall s, warm services",
                statistics.median(flow),
                unit="s",
                note=f"median of {len(flow)}",
            ),
            row(
                "fast_start",
                f"sample job command-to-summary vs training time ({label})",
                wall,
                training,
                direction="<=",
                limit=RATIO_TARGET,
                unit="s",
                note="warm services; training = the job's own timestamps (whole seconds)",
            ),
            row("fast_start", "embedded backend start-up, s (once, then kept)", backend_s, unit="s"),
            row("fast_start", "local Prefect server start-up, s (once, then kept)", prefect_s, unit="s"),
            *phase_rows,
        ]
        if not args.no_runner:
            rows.append(
                row(
                    "fast_start",
                    "warm runner start-up, s (once, then kept; serves the runs)",
                    runner_s,
                    unit="s",
                )
            )
    write_rows(args.json, rows)
    for r in rows:
        console.print(r, highlight=False)
    return 1 if any(r.passed is False for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
