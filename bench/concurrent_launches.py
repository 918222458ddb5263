"""Launch N fine-tuning jobs at once against the embedded backend and watch them all to the end.

Measures wall time, peak RSS of this launcher and of the backend's process tree, and HTTP requests per job
(counted by a transport wrapper around httpx's own). Target: launcher memory flat in N, and requests per job
<= job duration / poll interval + a small constant (create + final read).

    python bench/concurrent_launches.py --jobs 100 --worker-concurrency 4
    python bench/concurrent_launches.py --jobs 20 --max-steps 1     # "instant" training
    python bench/concurrent_launches.py --quick --json out.json     # 100 jobs, --max-steps 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from common import Row, RssSampler, add_common_args, row, write_rows
from rich.console import Console
from rich.table import Table

from backend.launcher import start_backend
from backend.settings import BackendSettings
from client import AsyncMKA1Client, ClientSettings
from client.models import (
    TERMINAL_STATUSES,
    JobCreateRequest,
    Method,
    SupervisedHyperparameters,
    SupervisedMethod,
)

JOB_ID = re.compile(r"/fine_tuning/jobs/([^/?]+)")
SLACK_REQUESTS = 2  # the create call and the read that sees the terminal status


class CountingTransport(httpx.AsyncBaseTransport):
    """httpx transport that counts requests per job id (and in total) before delegating."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.per_job: Counter[str] = Counter()
        self.total = 0
        self.max_latency_s = 0.0
        self.slowest = ""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Count, then send."""
        self.total += 1
        match = JOB_ID.search(request.url.path)
        if match:
            self.per_job[match.group(1)] += 1
        t0 = time.monotonic()
        response = await self._inner.handle_async_request(request)
        took = time.monotonic() - t0
        if took > self.max_latency_s:
            self.max_latency_s, self.slowest = took, f"{request.method} {request.url.path}"
        return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()


@dataclass
class JobOutcome:
    """One job as the launcher saw it."""

    job_id: str
    status: str
    duration_s: float
    error: str | None = None


def write_dataset(path: Path, n: int) -> Path:
    """The smallest valid training file: ``n`` one-turn chat examples."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Item {i}?"},
                {"role": "assistant", "content": f"Blue {i}."},
            ]
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


async def run_one(
    client: AsyncMKA1Client, file_id: str, seed: int, poll_s: float, timeout_s: float
) -> JobOutcome:
    """Create one job and poll it until terminal at a fixed interval."""
    method = Method(
        type="supervised",
        supervised=SupervisedMethod(hyperparameters=SupervisedHyperparameters(n_epochs=1, batch_size=10)),
    )
    started = time.monotonic()
    job = await client.jobs.create(
        JobCreateRequest(
            model="local:micro-chat", training_file=file_id, method=method, seed=seed, hyperparameters=None
        )
    )
    while job.status not in TERMINAL_STATUSES and time.monotonic() - started < timeout_s:
        await asyncio.sleep(poll_s)
        job = await client.jobs.retrieve(job.id)
    error = f"{job.error.code}: {job.error.message}" if job.error else None
    return JobOutcome(job.id, str(job.status), time.monotonic() - started, error)


async def launch_all(
    settings: ClientSettings, train: Path, args: argparse.Namespace
) -> tuple[list[JobOutcome], CountingTransport, float, JobOutcome]:
    """Upload once, then create and watch ``args.jobs`` jobs concurrently."""
    transport = CountingTransport()
    async with AsyncMKA1Client(settings, transport=transport) as client:
        uploaded = await client.files.upload(train, purpose="fine-tune")
        # One job first: the backend's cold start (imports, base model build) is not per-job cost.
        warm = await run_one(client, uploaded.id, 10**6, args.poll_interval, args.timeout)
        transport.per_job.clear()
        transport.total, transport.max_latency_s, transport.slowest = 0, 0.0, ""
        t0 = time.monotonic()
        outcomes = await asyncio.gather(
            *(
                run_one(client, uploaded.id, seed, args.poll_interval, args.timeout)
                for seed in range(args.jobs)
            )
        )
        return list(outcomes), transport, time.monotonic() - t0, warm


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--worker-concurrency", type=int, default=4, help="backend training worker processes")
    ap.add_argument("--poll-interval", type=float, default=1.0)
    ap.add_argument("--examples", type=int, default=10, help="training examples (10 is the minimum)")
    ap.add_argument("--max-steps", type=int, default=None, help="backend cap on optimizer steps per job")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per job")
    add_common_args(ap)
    args = ap.parse_args(argv)
    if args.quick:  # all 100 launches, but each job stops after one optimizer step
        args.max_steps = args.max_steps or 1

    console = Console()
    with tempfile.TemporaryDirectory(prefix="ftpipe-bench-") as tmp:
        bs = BackendSettings(
            data_dir=Path(tmp) / "backend",
            port=0,
            worker_concurrency=args.worker_concurrency,
            max_steps_per_job=args.max_steps,
        )
        train = write_dataset(Path(tmp) / "train.jsonl", args.examples)
        with start_backend(bs) as rb:
            settings = ClientSettings(base_url=rb.base_url, api_key=rb.api_key, timeout_s=60.0)
            rss_before = psutil.Process().memory_info().rss
            with RssSampler(0.1, tree_root=rb.pid) as rss:
                outcomes, transport, wall, warm = asyncio.run(launch_all(settings, train, args))
            rss_after = psutil.Process().memory_info().rss

    per_job = [transport.per_job[o.job_id] for o in outcomes]
    bounds = [o.duration_s / args.poll_interval + SLACK_REQUESTS for o in outcomes]
    over = sum(n > b + 1 for n, b in zip(per_job, bounds, strict=True))  # +1: sleep granularity
    statuses = Counter(o.status for o in outcomes)
    durations = sorted(o.duration_s for o in outcomes)
    mib = 1024 * 1024

    table = Table(
        title=f"{args.jobs} concurrent launches (local:micro-chat, {args.examples} examples, 1 epoch)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in [
        ("backend worker processes", str(args.worker_concurrency)),
        ("max steps per job", str(args.max_steps or "-")),
        ("poll interval", f"{args.poll_interval:.1f}s"),
        ("cold first job (not counted below)", f"{warm.duration_s:.1f}s {warm.status}"),
        ("statuses", ", ".join(f"{k}={v}" for k, v in statuses.items())),
        ("wall time (create -> all terminal)", f"{wall:.1f}s"),
        ("jobs/min", f"{60 * len(outcomes) / wall:.1f}"),
        ("job duration p50 / max", f"{durations[len(durations) // 2]:.1f}s / {durations[-1]:.1f}s"),
        (
            "launcher RSS before / peak / after",
            f"{rss_before / mib:.0f} / {rss.peak / mib:.0f} / {rss_after / mib:.0f} MiB",
        ),
        ("backend tree peak RSS (procs)", f"{rss.tree_peak / mib:.0f} MiB ({rss.tree_procs_peak})"),
        ("HTTP requests total", str(transport.total)),
        ("slowest request", f"{transport.max_latency_s:.2f}s ({transport.slowest.rsplit('/', 1)[0]}/...)"),
        ("requests/job mean / max", f"{sum(per_job) / len(per_job):.1f} / {max(per_job)}"),
        ("bound duration/poll + 2: mean", f"{sum(bounds) / len(bounds):.1f}"),
        ("jobs over the bound", str(over)),
    ]:
        table.add_row(name, value)
    console.print(table)
    name = "concurrency"
    steps = f"max {args.max_steps} step(s)/job" if args.max_steps else "full jobs"
    rows: list[Row] = [
        row(
            name,
            f"{args.jobs} launches: jobs succeeded",
            statuses.get("succeeded", 0),
            len(outcomes),
            direction=">=",
            limit=1.0,
            note=f"{args.worker_concurrency} workers, {steps}",
        ),
        row(
            name,
            "wall time create -> all terminal, s",
            wall,
            unit="s",
            note=f"{60 * len(outcomes) / wall:.1f} jobs/min",
        ),
        row(
            name,
            "requests/job (mean vs bound duration/poll + 2)",
            sum(per_job) / len(per_job),
            sum(bounds) / len(bounds),
            direction="<=",
            limit=1.0,
            note=f"max {max(per_job)}; {over} over",
        ),
        row(
            name,
            "launcher peak RSS MiB (vs before launch)",
            rss.peak / mib,
            rss_before / mib,
            unit="MiB",
        ),
        row(
            name,
            "backend tree peak RSS MiB",
            rss.tree_peak / mib,
            unit="MiB",
            note=f"{rss.tree_procs_peak} processes",
        ),
    ]
    write_rows(args.json, rows)
    for msg, n in Counter(o.error for o in outcomes if o.error).most_common(3):
        console.print(f"[red]{n} job(s) failed:[/red] {msg}", markup=True, highlight=False)
    return 0 if statuses.get("succeeded", 0) == len(outcomes) and over == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
