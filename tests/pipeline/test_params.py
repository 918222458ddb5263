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
        ({"n_epochs": 0}, "n_epochs must be an integer from 1 to 50, or 'auto'"),
        ({"batch_size": -3}, "batch_size must be an integer >= 1, or 'auto'"),
        ({"learning_rate_multiplier": 0}, "learning_rate_multiplier must be a number > 0"),
        ({"learning_rate_multiplier": float("nan")}, "learning_rate_multiplier must be"),
        ({"seed": -1}, "seed must be an integer from 0 to 2147483647"),
        ({"seed": "auto"}, "seed must be an integer from 0 to 2147483647"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata has 17 pairs; at most 16"),
        ({"beta": 0.1}, "beta only applies to method 'dpo'"),
        ({"model": ""}, "at least 1 character"),
    ],
)
def test_bad_values_are_refused_by_the_model(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _params(tmp_path, **overrides)


def test_job_method_is_the_contract_wire_form(tmp_path: Path) -> None:
    sft = _params(tmp_path, n_epochs=2, learning_rate_multiplier=0.5)
    assert sft.job_method().model_dump(exclude_none=True) == {
        "type": "supervised",
        "supervised": {
            "hyperparameters": {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}
        },
    }
    dpo = _params(tmp_path, method="dpo", beta=0.2)
    assert dpo.job_method().model_dump(exclude_none=True)["dpo"]["hyperparameters"]["beta"] == 0.2


def test_params_import_no_prefect() -> None:
    import subprocess
    import sys

    code = "import sys, flows.params; print(sorted(m for m in ('prefect', 'torch', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_flow_parameters_are_the_model_fields_top_level() -> None:
    import inspect

    from prefect.utilities.callables import parameter_schema

    from flows.fine_tune import fine_tune

    signature = inspect.signature(fine_tune.fn).parameters
    assert set(signature) == set(FineTuneParams.model_fields)
    schema = parameter_schema(fine_tune.fn).model_dump_for_openapi()
    assert set(schema["properties"]) == set(FineTuneParams.model_fields) and "required" not in schema
    for name, field in FineTuneParams.model_fields.items():
        prop = schema["properties"][name]
        assert prop.get("default") == field.get_default(call_default_factory=True), name
        assert prop.get("description") == field.description, name


def test_the_flow_refuses_a_run_without_training_data() -> None:
    with pytest.raises(ValueError, match="give dataset_dir .* or train_file; neither was set"):
        FineTuneParams.from_arguments({"model": "local:micro-chat"})
    with pytest.raises(ValueError, match=r"invalid fine-tune parameters: n_epochs: n_epochs must be"):
        FineTuneParams.from_arguments({"dataset_dir": "ds", "n_epochs": 0})


@pytest.mark.usefixtures("prefect_harness")
def test_a_partial_override_keeps_the_deployment_defaults() -> None:
    import yaml
    from prefect import get_client
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    from flows.fine_tune import fine_tune

    repo = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((repo / "deployments" / "prefect.yaml").read_text(encoding="utf-8"))
    nightly = next(d for d in config["deployments"] if d["name"] == "nightly-customer-support")
    deployment = fine_tune.to_deployment(name="partial-override-test", parameters=nightly["parameters"])
    deployment.apply()  # type: ignore[union-attr]
    scheduled: FlowRun = run_deployment(  # type: ignore[assignment]
        "fine-tune/partial-override-test",
        parameters={"model": "local:micro-chat"},
        timeout=0,
        as_subflow=False,
    )
    with get_client(sync_client=True) as pc:
        parameters = pc.read_flow_run(scheduled.id).parameters
    assert parameters["model"] == "local:micro-chat"
    assert {k: parameters[k] for k in nightly["parameters"] if k != "model"} == {
        k: v for k, v in nightly["parameters"].items() if k != "model"
    }
    params = FineTuneParams.from_arguments(parameters)
    assert params.dataset_dir == Path("datasets/customer-support") and params.suffix == "nightly"
    assert params.fresh_job_if_failed is True and params.metadata == {"trigger": "nightly"}
    assert params.promote_as == "support-bot" and params.gate_min_score == 0.3


def test_poll_interval_defaults_per_api_and_a_set_one_is_kept() -> None:
    unset = FineTuneParams(dataset_dir=Path("d"))
    assert unset.poll_policy().interval_s == 2.0  # a remote API: the contract's polite default
    assert unset.poll_policy(embedded=True).interval_s == 0.5  # loopback: starts and ends seen sooner
    # After the last step only loopback is polled faster (a remote API may take minutes to end a job).
    assert (unset.poll_policy().ending_interval_s, unset.poll_policy(embedded=True).ending_interval_s) == (
        None,
        0.1,
    )
    chosen = FineTuneParams(dataset_dir=Path("d"), poll_interval_s=3.0, poll_max_interval_s=1.0)
    for embedded in (False, True):
        policy = chosen.poll_policy(embedded=embedded)
        assert (policy.interval_s, policy.max_interval_s, policy.ending_interval_s) == (3.0, 3.0, None)


def test_the_flow_signature_accepts_every_default_the_cli_sends() -> None:
    # The CLI passes every field, unset ones as their defaults (e.g. poll_interval_s=None): Prefect checks
    # them against the flow's annotations before the run starts.
    from flows.fine_tune import fine_tune

    arguments = FineTuneParams(dataset_dir=Path("d")).flow_arguments()
    assert fine_tune.validate_parameters(arguments)["poll_interval_s"] is None
