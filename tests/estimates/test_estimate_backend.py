"""The embedded backend's pricing endpoints (SDK shapes) and a full estimate against its real job history."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.launcher import RunningBackend, start_backend
from backend.settings import BackendSettings
from client import ClientSettings, MKA1Client
from client.models import JobCreateRequest, Method, SupervisedHyperparameters, SupervisedMethod
from estimate.core import estimate_job
from estimate.duration import job_training_seconds
from estimate.pricing import Price, PriceTable
from estimate.tokens import count_tokens
from tests.jsonl_data import chat_example, write_jsonl

pytestmark = pytest.mark.integration
MODEL = "local:micro-chat"


@pytest.fixture(scope="module")
def priced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """A backend that charges 2.5 EUR per 1M trained tokens; flows find it through FTPIPE_BACKEND_*."""
    data_dir = tmp_path_factory.mktemp("priced")
    settings = BackendSettings(data_dir=data_dir, training_price_per_million=2.5, price_currency="EUR")
    with start_backend(settings, port=0) as rb, pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTPIPE_BACKEND_DATA_DIR", str(data_dir))
        mp.setenv("FTPIPE_BACKEND_PORT", str(rb.port))
        yield rb


def _client(rb: RunningBackend) -> MKA1Client:
    return MKA1Client(ClientSettings(base_url=rb.base_url, api_key=rb.api_key))


def test_pricing_endpoints_serve_the_configured_price_in_sdk_shapes(priced: RunningBackend) -> None:
    with _client(priced) as c:
        effective = c.pricing.effective()
        assert effective.currency == "EUR"
        row = next(r for r in effective.data if r.model == MODEL)
        assert row.rates is not None and row.rates.training_tokens == 2.5 and row.source == "cluster_default"
        (listed,) = c.pricing.list(model=MODEL).data
        assert listed.rates.training_tokens == 2.5 and listed.effective_to is None
        assert c.pricing.list(model="local:no-such-model").data == []
        assert c.pricing.currency().currency == "EUR"
    sdk = pytest.importorskip("meetkai_mka1.models")
    headers = {"Authorization": f"Bearer {priced.api_key.get_secret_value()}"}
    with httpx.Client(base_url=priced.base_url, headers=headers) as raw:
        sdk.EffectivePricesResponse.model_validate(raw.get("/models/pricing/effective").json())
        sdk.ListModelPricesResponse.model_validate(raw.get("/models/pricing").json())
        sdk.ClusterCurrencyResponse.model_validate(raw.get("/models/pricing/currency").json())


EPOCHS = 6


def _train(c: MKA1Client, path: Path, n_epochs: int, batch_size: int = 4) -> str:
    file_id = c.files.upload(path).id
    method = Method(
        type="supervised",
        supervised=SupervisedMethod(
            hyperparameters=SupervisedHyperparameters(n_epochs=n_epochs, batch_size=batch_size)
        ),
    )
    job = c.jobs.create(JobCreateRequest(model=MODEL, training_file=file_id, method=method))
    deadline = time.monotonic() + 300
    while not (job := c.jobs.retrieve(job.id)).is_terminal:
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.3)
    assert job.status == "succeeded", job.error
    return job.id


def test_estimate_matches_the_job_and_learns_its_throughput(priced: RunningBackend, tmp_path: Path) -> None:
    # Job timestamps are whole seconds: the job must train for more than one (6 epochs x 24 steps), or
    # an idle machine finishes within the second it started and the job has no measurable duration.
    path = write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(24)])
    with _client(priced) as c:
        before = estimate_job(
            c, path, model=MODEL, n_epochs=EPOCHS, embedded=True, table=PriceTable(), calibrate=False
        )
        assert before.duration.seconds is None and "no finished supervised job" in before.duration.basis
        assert before.price == Price(per_million_tokens=2.5, currency="EUR", source="API cluster_default")
        assert before.cost == pytest.approx(before.tokens.tokens * 2.5 / 1e6)

        job = c.jobs.retrieve(_train(c, path, n_epochs=EPOCHS, batch_size=1))
        assert job.trained_tokens == before.tokens.tokens

        after = estimate_job(
            c, path, model=MODEL, n_epochs=EPOCHS, embedded=True, table=PriceTable(), calibrate=False
        )
        actual = job_training_seconds(c, job)
    assert after.duration.jobs == [job.id]
    assert actual is not None and after.duration.seconds == pytest.approx(actual)


@pytest.mark.usefixtures("prefect_harness")
def test_budget_gate_on_the_embedded_backend(
    priced: RunningBackend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over budget: exit 1 in seconds, one line, no new file on the backend. Within: trains, records costs."""
    from cli.main import main

    ds = tmp_path / "ds"
    write_jsonl(ds / "train.jsonl", [chat_example(i) for i in range(16)])
    write_jsonl(ds / "validation.jsonl", [chat_example(100 + i) for i in range(10)])
    # Several seconds of training (whole-second job timestamps), so the record has a measured duration.
    tokens = count_tokens(ds / "train.jsonl", MODEL, "supervised", EPOCHS).tokens
    cost = tokens * 2.5 / 1e6
    argv = [
        "run",
        str(ds),
        "--model",
        MODEL,
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "1",
        "--poll-interval",
        "0.3",
    ]
    argv += ["--state-dir", str(tmp_path / "state"), "--output", str(tmp_path / "out"), "--quiet"]
    with _client(priced) as c:
        files_before = {f.id for f in c.files.list()}
        began = time.monotonic()
        assert main([*argv, "--max-tokens", "10"]) == 1
        assert main([*argv, "--max-cost", f"{cost / 2:.10f}"]) == 1
        stopped_in = time.monotonic() - began
        assert {f.id for f in c.files.list()} == files_before
        out = capsys.readouterr().out
        assert f"over budget: estimate {tokens:,} trained tokens > max_tokens 10" in out
        assert f"over budget: estimate {cost:,.2f} EUR ({tokens:,} trained tokens at 2.50 EUR per 1M" in out
        assert stopped_in < 120  # no training, no upload: only the estimate (generous for a loaded CI box)

        assert main([*argv, "--max-cost", f"{cost * 2:.10f}"]) == 0
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    est = record["estimate"]
    assert est["estimated_tokens"] == est["actual_tokens"] == record["trained_tokens"] == tokens
    assert est["estimated_cost"] == pytest.approx(cost) and est["actual_cost"] == pytest.approx(cost)
    assert est["currency"] == "EUR" and est["price_source"] == "API cluster_default"
    assert est["actual_duration_s"] is not None
