"""The flow's parameter model checks every value against the contract before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.params import FineTuneParams


def _params(tmp_path: Path, **kw: object) -> FineTuneParams:
    return FineTuneParams.model_validate({"dataset_dir": str(tmp_path), **kw})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hyperparameters": {"n_epochs": 0}}, "n_epochs must be an integer from 1 to 50, or 'auto'"),
        ({"hyperparameters": {"batch_size": -3}}, "batch_size must be an integer >= 1, or 'auto'"),
        (
            {"hyperparameters": {"learning_rate_multiplier": 0}},
            "learning_rate_multiplier must be a number > 0",
        ),
        ({"hyperparameters": {"learning_rate_multiplier": float("nan")}}, "learning_rate_multiplier must be"),
        ({"seed": -1}, "seed must be an integer from 0 to 2147483647"),
        ({"seed": "auto"}, "seed must be an integer from 0 to 2147483647"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata has 17 pairs; at most 16"),
        ({"hyperparameters": {"beta": 0.1}}, "beta only applies to method 'dpo'"),
        ({"model": ""}, "at least 1 character"),
    ],
)
def test_bad_values_are_refused_by_the_model(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _params(tmp_path, **overrides)


def test_job_method_is_the_contract_wire_form(tmp_path: Path) -> None:
    sft = _params(tmp_path, hyperparameters={"n_epochs": 2, "learning_rate_multiplier": 0.5})
    assert sft.job_method().model_dump(exclude_none=True) == {
        "type": "supervised",
        "supervised": {
            "hyperparameters": {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}
        },
    }
    dpo = _params(tmp_path, method="dpo", hyperparameters={"beta": 0.2})
    assert dpo.job_method().model_dump(exclude_none=True)["dpo"]["hyperparameters"]["beta"] == 0.2


def test_params_import_no_prefect() -> None:
    import subprocess
    import sys

    code = "import sys, flows.params; print(sorted(m for m in ('prefect', 'torch', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
