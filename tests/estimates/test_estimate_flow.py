"""The budget gate in the flow, the CLI and the sweep (fake API): stops before any upload; records estimates."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from estimate.tokens import count_tokens
from flows.backend_runtime import use_connection
from flows.fine_tune import fine_tune
from flows.params import FineTuneParams
from flows.sweep import sweep
from flows.sweep_config import SweepConfig, SweepParams
from tasks.errors import BudgetExceeded
from tests.jsonl_data import chat_example, write_jsonl
from tests.pipeline.fake_api import FakeMKA1

pytestmark = pytest.mark.usefixtures("prefect_harness")
MODEL = "local:micro-chat"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    d = tmp_path / "ds"
    write_jsonl(d / "train.jsonl", [chat_example(i) for i in range(12)])
    write_jsonl(d / "validation.jsonl", [chat_example(100 + i) for i in range(10)])
    return d


def _params(dataset: Path, tmp_path: Path, **kw: object) -> FineTuneParams:
    return FineTuneParams.model_validate(
        {
            "dataset_dir": dataset,
            "model": MODEL,
            "n_epochs": 2,
            "output_dir": tmp_path / "out",
            "state_dir": tmp_path / "state",
            "poll_interval_s": 0.01,
            "poll_max_interval_s": 0.02,
            **kw,
        }
    )


def test_run_over_the_token_budget_stops_before_upload(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeMKA1()
    argv = ["run", str(dataset), "--model", MODEL, "--epochs", "2", "--max-tokens", "10"]
    argv += ["--state-dir", str(tmp_path / "state"), "--output", str(tmp_path / "out")]
    with use_connection(fake.connection()):
        code = main(argv)
    out = capsys.readouterr().out
    tokens = count_tokens(dataset / "train.jsonl", MODEL, "supervised", 2).tokens
    assert code == 1
    assert f"stopped before upload: over budget: estimate {tokens:,} trained tokens > max_tokens 10;" in out
    assert fake.count("POST", "/files") == 0 and fake.files == {} and fake.jobs == {}


def test_run_within_budget_records_estimate_and_actual_cost(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTPIPE_TRAINING_PRICES", json.dumps({MODEL: 4.0}))
    tokens = count_tokens(dataset / "train.jsonl", MODEL, "supervised", 2).tokens
    fake = FakeMKA1()
    with use_connection(fake.connection()):
        record = fine_tune(**_params(dataset, tmp_path, max_cost=1.0, max_tokens=tokens).flow_arguments())
    est = record.estimate
    assert est is not None and est.exact and est.estimated_tokens == tokens
    assert est.actual_tokens == record.trained_tokens == 1234  # what the fake reports
    assert est.estimated_cost == pytest.approx(tokens * 4.0 / 1e6)
    assert est.actual_cost == pytest.approx(1234 * 4.0 / 1e6)
    assert est.currency == "USD" and est.price_source == "settings FTPIPE_TRAINING_PRICES"
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["estimate"]["estimated_tokens"] == tokens


def test_unknown_price_with_a_cost_budget_stops_the_run(dataset: Path, tmp_path: Path) -> None:
    fake = FakeMKA1()  # no pricing endpoint, no price table entry
    with use_connection(fake.connection()), pytest.raises(BudgetExceeded, match="cannot check max_cost 5.00"):
        fine_tune(**_params(dataset, tmp_path, max_cost=5.0).flow_arguments())
    assert fake.files == {}


def test_sweep_checks_the_sum_over_its_configs_before_launching_any(dataset: Path, tmp_path: Path) -> None:
    one_epoch = count_tokens(dataset / "train.jsonl", MODEL, "supervised", 1).tokens
    base = _params(dataset, tmp_path, max_tokens=3 * one_epoch)  # each config fits; 1 + 2 + 3 epochs do not
    params = SweepParams(
        base=base,
        configs=[SweepConfig(n_epochs=1), SweepConfig(n_epochs=2), SweepConfig(n_epochs=3)],
        output_dir=tmp_path / "sweep",
    )
    fake = FakeMKA1()
    with use_connection(fake.connection()):
        state = sweep(**params.flow_arguments(), return_state=True)
    assert state.is_failed()
    with pytest.raises(BudgetExceeded) as info:
        state.result()
    assert info.value.line.startswith(f"over budget: estimate {6 * one_epoch:,} trained tokens over 3 jobs")
    assert fake.files == {} and fake.jobs == {}


def test_without_a_budget_the_estimate_is_made_beside_the_uploads_and_still_recorded(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.estimate

    fake = FakeMKA1()
    made = tasks.estimate.estimate_job

    def after_the_job_exists(*args: Any, **kwargs: Any) -> Any:
        # Made before the upload (as a budget needs), this would wait for a job that is never created.
        deadline = time.monotonic() + 30
        while fake.count("POST", "/fine_tuning/jobs") == 0:
            assert time.monotonic() < deadline, "the estimate held up the uploads and the job"
            time.sleep(0.01)
        return made(*args, **kwargs)

    monkeypatch.setattr(tasks.estimate, "estimate_job", after_the_job_exists)
    with use_connection(fake.connection()):
        record = fine_tune(**_params(dataset, tmp_path).flow_arguments())
    tokens = count_tokens(dataset / "train.jsonl", MODEL, "supervised", 2).tokens
    assert record.estimate is not None and record.estimate.estimated_tokens == tokens
    assert record.estimate.actual_tokens == record.trained_tokens


def test_without_a_budget_a_failed_estimate_costs_the_record_nothing_else(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Made beside the training, an estimate that breaks (an unwritable state dir, a tokenizer that will not
    load) must not fail a run whose model was trained: the record just has no estimate."""
    import tasks.estimate

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", "token-counts.json")

    monkeypatch.setattr(tasks.estimate, "estimate_job", broken)
    with use_connection(FakeMKA1().connection()):
        record = fine_tune(**_params(dataset, tmp_path).flow_arguments())
    assert record.status == "succeeded" and record.fine_tuned_model
    assert record.estimate is None
