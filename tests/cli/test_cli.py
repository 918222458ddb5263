"""The ``ftpipe`` argparse tree: one-line usage errors before any work, help everywhere, lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.main import build_parser, main
from cli.run import params_from_args
from flows.params import FineTuneParams

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "datasets" / "customer-support"
HEAVY = ("prefect", "torch", "pandas", "transformers")


@pytest.mark.parametrize(
    ("flag", "value", "rule"),
    [
        ("--epochs", "0", "must be an integer from 1 to 50, or 'auto'"),
        ("--epochs", "two", "must be an integer from 1 to 50, or 'auto'"),
        ("--batch-size", "-3", "must be an integer >= 1, or 'auto'"),
        ("--seed", "-1", "must be an integer from 0 to 2147483647"),
        ("--learning-rate-multiplier", "0", "must be a number > 0, or 'auto'"),
        ("--lr-multiplier", "nan", "must be a number > 0, or 'auto'"),
        ("--beta", "-1", "must be a number > 0, or 'auto' (DPO only)"),
        ("--timeout", "0", "must be a number > 0"),
    ],
)
def test_a_bad_option_is_one_line_at_parsing(
    flag: str, value: str, rule: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", str(SAMPLE), flag, value])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("ftpipe run: error: argument --") and flag in line.split(":")[2]
    assert f"{rule}, got '{value}'" in line


def test_a_bad_option_exits_before_prefect_is_imported() -> None:
    # Nothing can be validated or uploaded without the flow module, which imports Prefect.
    code = (
        "import sys, json, time\n"
        "from cli.main import main\n"
        "t = time.perf_counter()\n"
        "try:\n"
        f"    main(['run', {str(SAMPLE)!r}, '--epochs', '0'])\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        f"print(json.dumps([code, time.perf_counter() - t, [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    wall = time.monotonic() - started
    exit_code, _, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert exit_code == 2 and heavy == []
    assert proc.stderr.count("\n") == 1 and "--epochs" in proc.stderr
    assert wall < 30  # generous: the bound is about never starting Prefect, not about a loaded machine


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "supervised", "--beta", "0.1"], "beta only applies to method 'dpo'"),
        ([f"--metadata=k{i}=v" for i in range(17)], "metadata has 17 pairs; at most 16"),
        (["--suffix", "x" * 65], "suffix: String should have at most 64 characters"),
        (["--model", ""], "model: String should have at least 1 character"),
    ],
)
def test_bad_combinations_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(SAMPLE), *argv]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("ftpipe run: error: ") and message in line


def test_run_needs_a_dataset_or_train_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "give a dataset folder or --train FILE" in capsys.readouterr().err


def test_run_defaults_are_the_parameter_model_defaults() -> None:
    args = build_parser().parse_args(["run", str(SAMPLE)])
    assert params_from_args(args) == FineTuneParams(dataset_dir=SAMPLE)


def test_run_options_reach_the_parameters() -> None:
    args = build_parser().parse_args(
        ["run", "--train", "t.jsonl", "--method", "dpo", "--beta", "0.5", "--epochs", "3", "--seed", "0"]
        + [
            "--learning-rate-multiplier",
            "auto",
            "--batch-size",
            "8",
            "--metadata",
            "team=x",
            "--timeout",
            "9",
        ]
    )
    params = params_from_args(args)
    assert params.train_file == Path("t.jsonl") and params.method == "dpo" and params.seed == 0
    assert params.hyperparameters().model_dump() == {
        "n_epochs": 3,
        "batch_size": 8,
        "learning_rate_multiplier": "auto",
        "beta": 0.5,
    }
    assert params.metadata == {"team": "x"} and params.wait_timeout_s == 9.0


def test_building_the_tree_imports_no_command_dependencies() -> None:
    code = "import sys; from cli.main import build_parser; build_parser(); print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'client', 'flows', 'validation', 'backend')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == "[]"


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from cli.main import main\n"
        "for argv in (['--help'], ['run', '--help'], ['validate', '--help'], ['sweep', '--help'],\n"
        "             ['backend', 'serve', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0, (argv, e.code)\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == "[]"


def test_python_m_backend_serve_keeps_its_own_parser() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "backend", "serve", "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0 and "usage: python -m backend serve" in proc.stdout


def test_prefect_env_defaults_keep_what_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.common import PREFECT_ENV_DEFAULTS, prefect_env_defaults

    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "7")
    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    prefect_env_defaults()
    assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "7"
    assert (
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"]
        == PREFECT_ENV_DEFAULTS["PREFECT_SERVER_ANALYTICS_ENABLED"]
    )
    # Long enough for a first start (migrations) on a loaded 2-core machine; Prefect's own default is 20.
    assert int(PREFECT_ENV_DEFAULTS["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) >= 60
