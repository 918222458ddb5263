"""Options whose default and help come from the flow's parameter model, and the groups commands share.

``run``, ``estimate`` and ``sweep`` describe the same job; declaring its options once keeps their names,
defaults, checks and help identical across commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import model_default, model_help, non_negative_float, positive_int

if TYPE_CHECKING:
    from pydantic import BaseModel

# argparse's add_argument_group returns a private type; both it and a parser take add_argument.
OptionTarget = Any


def field_option(
    target: OptionTarget,
    *flags: str,
    model: type[BaseModel],
    field: str,
    show_default: bool = True,
    note: str = "",
    **kwargs: Any,
) -> None:
    """Add an option for ``model.field``: the model's default (unless given) and description as help."""
    kwargs.setdefault("default", model_default(model, field))
    target.add_argument(*flags, help=model_help(model, field, show_default=show_default) + note, **kwargs)


def add_data_files(target: OptionTarget, *, validation_note: str = "") -> None:
    """``--train`` and ``--validation``: explicit files instead of (or over) a dataset folder's."""
    from flows.params import FineTuneParams as fp

    field_option(
        target, "--train", model=fp, field="train_file", show_default=False, type=Path, metavar="FILE"
    )
    field_option(
        target,
        "--validation",
        model=fp,
        field="validation_file",
        show_default=False,
        note=validation_note,
        type=Path,
        metavar="FILE",
    )


def add_job_shape(target: OptionTarget, *, batch_size_note: str = "") -> None:
    """``--model``, ``--method``, ``--epochs``, ``--batch-size``: what a job trains, checked by the contract."""
    from cli.common import contract_value
    from contract.hyperparameters import BatchSize, NEpochs
    from flows.params import FineTuneParams as fp

    field_option(target, "--model", model=fp, field="model")
    field_option(target, "--method", model=fp, field="method", choices=("supervised", "dpo"))
    field_option(target, "--epochs", model=fp, field="n_epochs", type=contract_value("n_epochs", NEpochs))
    field_option(
        target,
        "--batch-size",
        model=fp,
        field="batch_size",
        note=batch_size_note,
        type=contract_value("batch_size", BatchSize),
    )


def add_api(target: OptionTarget) -> None:
    """``--base-url`` and ``--on-behalf-of``: which API a command talks to, and for whom."""
    from flows.params import FineTuneParams as fp

    field_option(
        target,
        "--base-url",
        model=fp,
        field="base_url",
        show_default=False,
        note=" (default: MKA1_BASE_URL)",
        metavar="URL",
    )
    field_option(target, "--on-behalf-of", model=fp, field="on_behalf_of", show_default=False, metavar="USER")


def add_progress(target: OptionTarget) -> None:
    """``--progress {auto,rich,plain,none}``: how a command that runs a flow shows its progress."""
    from cli.progress_display import MODE_HELP, MODES

    target.add_argument("--progress", choices=MODES, default="auto", help=MODE_HELP)


def add_budget(p: argparse.ArgumentParser) -> None:
    """``--max-cost`` and ``--max-tokens``: stop before upload when the estimate is over either."""
    from estimate.budget import Budget

    group = p.add_argument_group("budget")
    field_option(
        group,
        "--max-cost",
        model=Budget,
        field="max_cost",
        show_default=False,
        type=non_negative_float,
        metavar="AMOUNT",
    )
    field_option(
        group,
        "--max-tokens",
        model=Budget,
        field="max_tokens",
        show_default=False,
        type=positive_int,
        metavar="N",
    )
