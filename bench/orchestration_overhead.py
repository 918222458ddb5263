"""Orchestration overhead: the Prefect ``fine_tune`` flow vs. a plain script making the same API calls.

Both run against one embedded backend with the same base model, seed, dataset and a fixed poll interval;
each run uses its own end user (X-On-Behalf-Of) so neither reuses the other's files or job. What keeps the
comparison fair (an earlier version had the flow "faster" than the script, 0.80x):

* a warm-up job runs before timing, so neither variant pays the backend worker's torch import and base
  model build (with two repeats the script, going first, used to pay it alone);
* the script does the flow's work without Prefect: the same validation, uploads, job, poll loop (retrieve
  + new events, then a fixed sleep), the same metrics frames (Parquet + CSV) and loss-curve PNG, smoke
  prompts with the same token budget;
* the order alternates and the median of several pairs is compared;
* Prefect's ephemeral server is started (and warmed with a trivial flow) before timing; its start-up is
  reported as its own row.

    python bench/orchestration_overhead.py [--dataset datasets/customer-support] [--model local:tiny-chat]
    python bench/orchestration_overhead.py --quick --json out.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from common import Row, add_common_args, row, write_rows  # noqa: E402
from prefect import flow  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from backend.launcher import start_backend  # noqa: E402
from backend.settings import BackendSettings  # noqa: E402
from client import ClientSettings, MKA1Client  # noqa: E402
from client.models import InputMessage, JobCreateRequest, ResponseCreateRequest  # noqa: E402
from evaluation.evalset import load_eval_file  # noqa: E402
from flows.fine_tune import fine_tune  # noqa: E402
from flows.params import FineTuneParams  # noqa: E402
from tasks.metrics import (  # noqa: E402
    checkpoints_frame,
    events_frame,
    final_metrics,
    loss_curve_png,
    metrics_frame,
)
from validation import validate_dataset  # noqa: E402

TARGET = 1.10


def plain_script(base_url: str, api_key: object, user: str, params: FineTuneParams) -> float:
    """The same calls as the flow, with no orchestration: validate, upload, create, poll, fetch, smoke."""
    started = time.perf_counter()
    train, val, smoke = params.train_path(), params.validation_path(), params.smoke_path()
    report = validate_dataset(train, val, n_epochs=params.n_epochs)
    assert report.ok, [str(i) for i in report.errors]
    settings = ClientSettings(base_url=base_url, api_key=api_key, on_behalf_of=user)  # type: ignore[arg-type]
    with MKA1Client(settings) as c:
        train_id = c.files.upload(train, purpose="fine-tune").id
        val_id = c.files.upload(val, purpose="fine-tune").id if val else None
        job = c.jobs.create(
            JobCreateRequest(
                model=params.model,
                training_file=train_id,
                validation_file=val_id,
                suffix=params.suffix,
                seed=params.seed,
                method=params.job_method(),
                hyperparameters=None,
            )
        )
        since: str | None = None
        while True:
            job = c.jobs.retrieve(job.id)
            for event in c.jobs.new_events(job.id, since):
                since = event.id
            if job.is_terminal:
                break
            time.sleep(params.poll_interval_s)
        assert job.status == "succeeded", job.error
        # What collect_metrics_task does, minus Prefect: frames to Parquet + CSV and the loss-curve PNG.
        ck = checkpoints_frame(list(c.jobs.list_checkpoints(job.id)))
        events = c.jobs.new_events(job.id, None)
        steps, ev = metrics_frame(events), events_frame(events)
        out = params.output_dir or Path("runs") / job.id
        out.mkdir(parents=True, exist_ok=True)
        ck.to_parquet(out / "checkpoints.parquet", index=False)
        ck.to_csv(out / "checkpoints.csv", index=False)
        for name, frame in (("metrics", steps), ("events", ev)):
            frame.to_parquet(out / f"{name}.parquet", index=False)
            frame.to_csv(out / f"{name}.csv", index=False)
        (out / "loss_curve.png").write_bytes(loss_curve_png(ck, steps))
        final_metrics(ck, steps)
        # The flow with evaluate=False asks the smoke prompts of every checkpoint and the final model.
        models = [*ck["model"].dropna().astype(str), job.fine_tuned_model or ""]
        for case in load_eval_file(smoke, kind="smoke").cases if smoke else []:
            for model in models:
                c.responses.create(
                    ResponseCreateRequest(
                        model=model,
                        input=[InputMessage(role=m.role, content=m.content) for m in case.input_messages()],
                        max_output_tokens=params.eval_max_output_tokens,
                        temperature=0,
                        store=False,
                    )
                )
    return time.perf_counter() - started


def flow_run(params: FineTuneParams) -> float:
    """Wall time of one ``fine_tune`` flow call."""
    started = time.perf_counter()
    result = fine_tune(**params.flow_arguments())
    assert result.status == "succeeded"
    return time.perf_counter() - started


@flow(name="bench-warmup")
def _warmup() -> int:
    return 1


def _params(args: argparse.Namespace, tmp: Path, tag: str, user: str) -> FineTuneParams:
    epochs = args.epochs if args.epochs == "auto" else int(args.epochs)
    return FineTuneParams(
        dataset_dir=args.dataset,
        model=args.model,
        seed=42,
        n_epochs=epochs,
        poll_interval_s=args.interval,
        poll_max_interval_s=args.interval,
        wait_timeout_s=3600,
        output_dir=tmp / f"out-{tag}",
        state_dir=tmp / f"state-{tag}",
        on_behalf_of=user,
        evaluate=False,  # the eval stage has its own figure; this compares the pipeline's orchestration
    )


def main() -> None:
    """Run both variants ``--repeats`` times (alternating) and print wall times and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=Path("datasets/customer-support"))
    ap.add_argument("--model", default="local:tiny-chat")
    ap.add_argument(
        "--epochs", default="auto", help="auto: the sample job as `ftpipe run` trains it (3 epochs)"
    )
    ap.add_argument("--interval", type=float, default=0.5, help="poll interval (fixed) for both variants")
    ap.add_argument("--repeats", type=int, default=4, help="pairs; even numbers balance the order bias")
    add_common_args(ap)
    args = ap.parse_args()
    if args.quick:
        args.repeats = 2
    console = Console()

    t0 = time.perf_counter()
    _warmup()  # starts Prefect's ephemeral server
    prefect_startup = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="ftpipe-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data_dir = tmp / "backend"
        with start_backend(BackendSettings(data_dir=data_dir, port=0)) as rb:
            os.environ["FTPIPE_BACKEND_DATA_DIR"] = str(data_dir)  # the flow reuses this backend
            os.environ["FTPIPE_BACKEND_PORT"] = str(rb.port)
            t0 = time.perf_counter()
            warm = plain_script(rb.base_url, rb.api_key, "bench-warmup", _params(args, tmp, "warm", "w"))
            console.print(f"warm-up job (not counted): {warm:.1f}s, measured {time.perf_counter() - t0:.1f}s")
            plain_times: list[float] = []
            flow_times: list[float] = []
            for i in range(args.repeats):
                user = f"bench-{uuid.uuid4().hex[:8]}"
                flow_params = _params(args, tmp, f"flow-{i}", user + "-flow")
                plain_params = _params(args, tmp, f"plain-{i}", user + "-plain")
                if i % 2 == 0:
                    plain_times.append(plain_script(rb.base_url, rb.api_key, user + "-plain", plain_params))
                    flow_times.append(flow_run(flow_params))
                else:
                    flow_times.append(flow_run(flow_params))
                    plain_times.append(plain_script(rb.base_url, rb.api_key, user + "-plain", plain_params))
                console.print(f"run {i + 1}: plain {plain_times[-1]:.2f}s, flow {flow_times[-1]:.2f}s")
            # The flow must have used this backend, not started its own (which would be slower anyway).
            with MKA1Client(
                ClientSettings(base_url=rb.base_url, api_key=rb.api_key, on_behalf_of=user + "-flow")
            ) as c:
                assert next(iter(c.jobs.list()), None) is not None, (
                    "the flow's jobs are not on the benchmark's backend"
                )

    table = Table(title=f"orchestration overhead ({args.model}, {args.dataset}, poll {args.interval}s)")
    for col in ("variant", "runs", "median wall s", "min s", "max s"):
        table.add_column(col)
    for name, times in (("plain script", plain_times), ("prefect flow", flow_times)):
        table.add_row(
            name, str(len(times)), f"{statistics.median(times):.2f}", f"{min(times):.2f}", f"{max(times):.2f}"
        )
    console.print(table)
    med_flow, med_plain = statistics.median(flow_times), statistics.median(plain_times)
    ratio = med_flow / med_plain
    console.print(f"ratio flow/plain (median): {ratio:.3f}x (target <= {TARGET:.2f}x)")
    console.print(
        f"Prefect ephemeral server start-up (once per process, excluded above): {prefect_startup:.1f}s"
    )
    rows: list[Row] = [
        row(
            "orchestration",
            "fine_tune flow vs plain script, median wall s",
            med_flow,
            med_plain,
            direction="<=",
            limit=TARGET,
            unit="s",
            note=f"{args.repeats} alternating pairs, warm backend, poll {args.interval}s",
        ),
        row(
            "orchestration",
            "per-run overhead, s (flow - plain, median)",
            med_flow - med_plain,
            unit="s",
        ),
        row(
            "orchestration",
            "Prefect ephemeral server start-up, s (once per process)",
            prefect_startup,
            unit="s",
        ),
    ]
    write_rows(args.json, rows)


if __name__ == "__main__":
    main()
