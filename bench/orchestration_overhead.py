"""Orchestration overhead: the Prefect ``fine_tune`` flow vs. a plain script making the same API calls.

Both run against one embedded backend with the same base model, seed, dataset and a fixed poll interval;
each run uses its own end user (X-On-Behalf-Of) so neither reuses the other's files or job. The Prefect
ephemeral server is started (and warmed with a trivial flow) before timing; its start-up is reported apart.

    python bench/orchestration_overhead.py [--dataset datasets/customer-support] [--model local:tiny-chat]
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

from prefect import flow  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from backend.launcher import start_backend  # noqa: E402
from backend.settings import BackendSettings  # noqa: E402
from client import ClientSettings, MKA1Client  # noqa: E402
from client.models import JobCreateRequest, ResponseCreateRequest  # noqa: E402
from flows.fine_tune import fine_tune  # noqa: E402
from flows.params import BackendOptions, FineTuneParams, Hyperparameters, PollingSettings  # noqa: E402
from tasks.smoke import load_smoke_file  # noqa: E402
from validation import validate_dataset  # noqa: E402


def plain_script(base_url: str, api_key: object, user: str, params: FineTuneParams) -> float:
    """The same calls as the flow, with no orchestration: validate, upload, create, poll, fetch, smoke."""
    started = time.perf_counter()
    train, val, smoke = params.train_path(), params.validation_path(), params.smoke_path()
    report = validate_dataset(train, val, n_epochs=params.hyperparameters.n_epochs)
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
                seed=params.seed,
                method=params.job_method(),
            )
        )
        since: str | None = None
        while True:
            job = c.jobs.retrieve(job.id)
            for event in c.jobs.new_events(job.id, since):
                since = event.id
            if job.is_terminal:
                break
            time.sleep(params.polling.interval_s)
        assert job.status == "succeeded", job.error
        c.jobs.new_events(job.id, None)
        list(c.jobs.list_checkpoints(job.id))
        for prompt in load_smoke_file(smoke) if smoke else []:
            c.responses.create(
                ResponseCreateRequest(
                    model=job.fine_tuned_model or "", input=prompt.prompt, max_output_tokens=32, temperature=0
                )
            )
    return time.perf_counter() - started


def flow_run(params: FineTuneParams) -> float:
    """Wall time of one ``fine_tune`` flow call."""
    started = time.perf_counter()
    result = fine_tune(params)
    assert result.status == "succeeded"
    return time.perf_counter() - started


@flow(name="bench-warmup")
def _warmup() -> int:
    return 1


def main() -> None:
    """Run both variants ``--repeats`` times (alternating) and print wall times and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=Path("datasets/customer-support"))
    ap.add_argument("--model", default="local:tiny-chat")
    ap.add_argument("--epochs", default="auto")
    ap.add_argument("--interval", type=float, default=1.0, help="poll interval (fixed) for both variants")
    ap.add_argument("--repeats", type=int, default=2, help="even numbers balance the order bias")
    args = ap.parse_args()
    console = Console()

    t0 = time.perf_counter()
    _warmup()  # starts Prefect's ephemeral server
    prefect_startup = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="ftpipe-bench-") as tmp:
        data_dir = Path(tmp) / "backend"
        with start_backend(BackendSettings(data_dir=data_dir, port=0)) as rb:
            os.environ["FTPIPE_BACKEND_DATA_DIR"] = str(data_dir)  # the flow reuses this backend
            os.environ["FTPIPE_BACKEND_PORT"] = str(rb.port)
            epochs = args.epochs if args.epochs == "auto" else int(args.epochs)
            plain_times, flow_times = [], []
            for i in range(args.repeats):
                user = f"bench-{uuid.uuid4().hex[:8]}"
                params = FineTuneParams(
                    dataset_dir=args.dataset,
                    model=args.model,
                    seed=42,
                    hyperparameters=Hyperparameters(n_epochs=epochs),
                    polling=PollingSettings(
                        interval_s=args.interval, max_interval_s=args.interval, timeout_s=3600
                    ),
                    output_dir=Path(tmp) / f"out-{i}",
                    state_dir=Path(tmp) / f"state-{i}",
                    backend=BackendOptions(on_behalf_of=user + "-flow"),
                )
                # Alternate which goes first: the first job in a fresh backend also pays model loading.
                if i % 2 == 0:
                    plain_times.append(plain_script(rb.base_url, rb.api_key, user + "-plain", params))
                    flow_times.append(flow_run(params))
                else:
                    flow_times.append(flow_run(params))
                    plain_times.append(plain_script(rb.base_url, rb.api_key, user + "-plain", params))
                console.print(f"run {i + 1}: plain {plain_times[-1]:.1f}s, flow {flow_times[-1]:.1f}s")

    table = Table(title=f"orchestration overhead ({args.model}, {args.dataset}, poll {args.interval}s)")
    for col in ("variant", "runs", "median wall s", "min s", "max s"):
        table.add_column(col)
    for name, times in (("plain script", plain_times), ("prefect flow", flow_times)):
        table.add_row(
            name, str(len(times)), f"{statistics.median(times):.2f}", f"{min(times):.2f}", f"{max(times):.2f}"
        )
    console.print(table)
    ratio = statistics.median(flow_times) / statistics.median(plain_times)
    console.print(f"ratio flow/plain (median): {ratio:.3f}x (target <= 1.10x)")
    console.print(
        f"Prefect ephemeral server start-up (once per process, excluded above): {prefect_startup:.1f}s"
    )


if __name__ == "__main__":
    main()
