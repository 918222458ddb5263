"""Sweep pieces that need no server: config expansion, child params, the frame and the best pick."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from flows.params import FineTuneParams
from flows.sweep_config import SweepConfig, SweepGrid, SweepParams, child_params, load_sweep_file
from flows.sweep_report import COLUMNS, SweepRow, comparison_frame, pick_best, write_outputs
from tests.sweep.conftest import base_params


def _params(tmp_path: Path, **kw: object) -> SweepParams:
    return SweepParams.model_validate({"base": base_params(tmp_path, tmp_path), **kw})


def test_grid_expands_to_the_product_after_explicit_configs(tmp_path: Path) -> None:
    p = _params(
        tmp_path,
        configs=[{"name": "first", "seed": 1}],
        grid={"learning_rate_multiplier": [0.5, 2.0], "seed": [1, 2, 3]},
    )
    configs = p.all_configs()
    assert len(configs) == 1 + 6
    assert configs[0].name == "first"
    assert {(c.learning_rate_multiplier, c.seed) for c in configs[1:]} == {
        (lr, s) for lr in (0.5, 2.0) for s in (1, 2, 3)
    }
    assert len({c.name for c in configs}) == len(configs)


def test_duplicate_names_are_made_unique(tmp_path: Path) -> None:
    p = _params(tmp_path, configs=[{"name": "a", "seed": 1}, {"name": "a", "seed": 2}])
    assert [c.name for c in p.all_configs()] == ["a", "a-1"]


def test_a_sweep_without_configs_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="configs or a non-empty grid"):
        _params(tmp_path)
    with pytest.raises(ValidationError):
        _params(tmp_path, grid=SweepGrid().model_dump())


def test_child_params_override_only_the_set_fields(tmp_path: Path) -> None:
    base = FineTuneParams.model_validate(base_params(tmp_path, tmp_path, metadata={"team": "x"}))
    cfg = SweepConfig(name="c1", learning_rate_multiplier=0.25, seed=7)
    child = child_params(base, cfg, tmp_path / "sweep", "s1")
    assert child.learning_rate_multiplier == 0.25
    assert child.n_epochs == 1 and child.batch_size == 4
    assert child.seed == 7 and child.model == "local:micro-chat"
    assert child.output_dir == tmp_path / "sweep" / "c1"
    assert child.metadata == {"team": "x", "ftpipe_sweep": "s1", "ftpipe_sweep_config": "c1"}
    assert base.seed == 42  # the base is not mutated


def _row(name: str, status: str, loss: float | None) -> SweepRow:
    metrics = {} if loss is None else {"full_valid_loss": loss, "train_loss": loss + 1}
    return SweepRow(name, "local:micro-chat", 1, "auto", 4, 42, None, status=status, metrics=metrics)


def test_frame_best_pick_and_files(tmp_path: Path) -> None:
    rows = [_row("a", "succeeded", 2.0), _row("b", "failed", None), _row("c", "succeeded", 1.5)]
    rows[1].error = "NotFoundError: no such model"
    frame = comparison_frame(rows)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 3
    best = pick_best(frame, "full_valid_loss", "min")
    assert best is not None and best["name"] == "c"
    worst = pick_best(frame, "full_valid_loss", "max")
    assert worst is not None and worst["name"] == "a"  # failed rows never win
    paths = write_outputs(frame, b"\x89PNG", tmp_path)
    back = pd.read_parquet(paths["parquet"])
    assert back["error"].tolist()[1] == "NotFoundError: no such model"
    assert pd.read_csv(paths["csv"])["name"].tolist() == ["a", "b", "c"]


def test_no_best_when_nothing_succeeded() -> None:
    frame = comparison_frame([_row("a", "failed", None)])
    assert pick_best(frame, "full_valid_loss", "min") is None


def test_load_sweep_file_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.jsonl").write_text("{}\n")
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(
        "base:\n  dataset_dir: ds\n  model: local:micro-chat\ngrid:\n  seed: [1, 2]\nmax_concurrency: 3\n"
    )
    p = load_sweep_file(cfg)
    assert p.base.dataset_dir == (tmp_path / "ds").resolve()
    assert p.max_concurrency == 3 and len(p.all_configs()) == 2


def test_select_by_choices_are_the_contract_metrics() -> None:
    from typing import get_args

    from contract.wire import CHECKPOINT_METRICS
    from flows.sweep_config import SelectMetric

    assert get_args(SelectMetric) == CHECKPOINT_METRICS


def test_sweep_cli_quiet_lowers_prefect_logging_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # flows.sweep imported Prefect (and so configured its logging) long before --quiet is parsed.
    import logging

    import flows.sweep as sweep_module
    from cli.main import main

    class _FailedState:
        message = "stopped by the test"

        def is_completed(self) -> bool:
            return False

        def result(self, raise_on_failure: bool = True) -> BaseException:
            return RuntimeError("stopped by the test")

    seen: dict[str, int] = {}

    def fake_sweep(return_state: bool = False, **parameters: object) -> _FailedState:
        assert SweepParams.from_arguments(parameters).grid is not None
        seen["level"] = logging.getLogger("prefect.flow_runs").getEffectiveLevel()
        return _FailedState()

    loggers = [
        logging.getLogger(n) for n in ("prefect", "prefect.extra", "prefect.client", "prefect.infrastructure")
    ]
    levels = [lg.level for lg in loggers]
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "INFO")
    monkeypatch.setattr(sweep_module, "sweep", fake_sweep)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.jsonl").write_text("{}\n")
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text("base:\n  dataset_dir: ds\ngrid:\n  seed: [1]\n")
    try:
        assert main(["sweep", str(cfg), "--quiet"]) == 1
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    assert seen["level"] == logging.WARNING


def test_hyperparameter_columns_stay_numbers(tmp_path: Path) -> None:
    rows = [_row("a", "succeeded", 2.0), SweepRow("b", "local:micro-chat", "auto", 0.5, "auto", 7, None)]
    frame = comparison_frame(rows)
    assert str(frame["n_epochs"].dtype) == "Int64" and str(frame["batch_size"].dtype) == "Int64"
    assert frame["learning_rate_multiplier"].dtype == "float64"
    assert frame["n_epochs"].tolist()[0] == 1 and pd.isna(frame["n_epochs"].tolist()[1])
    assert frame["learning_rate_multiplier"].tolist()[1] == 0.5 and pd.isna(
        frame["learning_rate_multiplier"][0]
    )
    back = pd.read_parquet(write_outputs(frame, b"\x89PNG", tmp_path)["parquet"])
    assert str(back["batch_size"].dtype) == "Int64" and back["batch_size"].tolist()[0] == 4
    from flows.sweep_report import table_rows

    shown = table_rows(frame)
    assert (shown[0]["n_epochs"], shown[0]["learning_rate_multiplier"]) == (1, "auto")
    assert (shown[1]["n_epochs"], shown[1]["batch_size"], shown[1]["learning_rate_multiplier"]) == (
        "auto",
        "auto",
        0.5,
    )


def test_sweep_flow_parameters_are_the_model_fields_top_level() -> None:
    import inspect

    from flows.sweep import sweep

    signature = inspect.signature(sweep.fn).parameters
    assert list(signature)[0] == "base" and set(signature) == set(SweepParams.model_fields)
    for name, field in SweepParams.model_fields.items():
        if name != "base":
            assert signature[name].default.default == field.get_default(call_default_factory=True), name


def test_sweep_config_imports_no_prefect_or_pandas() -> None:
    import subprocess
    import sys

    code = "import sys, flows.sweep_config; print([m for m in ('prefect', 'pandas') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
