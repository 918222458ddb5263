"""Validate a train file (and optional validation file) together: overlap and billed-token estimate."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Literal

from contract.wire import DEFAULT_EPOCHS, auto_epochs
from validation.core import (
    DEFAULT_MAX_ISSUES,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MIN_EXAMPLES,
    DEFAULT_TOKEN_LIMIT,
    KindArg,
    validate_file_with_hashes,
)
from validation.results import DatasetReport, Issue

OVERLAP_PAIRS_SHOWN = 5


def validate_dataset(
    train_path: str | os.PathLike[str],
    validation_path: str | os.PathLike[str] | None = None,
    *,
    n_epochs: int | Literal["auto"] = DEFAULT_EPOCHS,
    kind: KindArg = "auto",
    min_examples: int = DEFAULT_MIN_EXAMPLES,
    token_limit: int = DEFAULT_TOKEN_LIMIT,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_issues: int = DEFAULT_MAX_ISSUES,
) -> DatasetReport:
    """Validate train (+ validation) files, warn on examples present in both, estimate billed tokens."""
    opts = {
        "min_examples": min_examples,
        "token_limit": token_limit,
        "max_line_bytes": max_line_bytes,
        "max_issues": max_issues,
    }
    train, train_hashes = validate_file_with_hashes(train_path, kind, n_epochs=DEFAULT_EPOCHS, **opts)
    epochs = auto_epochs(train.stats.examples) if n_epochs == "auto" else n_epochs
    if epochs != DEFAULT_EPOCHS:  # "auto" depends on the example count, known only now
        st = train.stats
        train.stats = replace(
            st, n_epochs=epochs, estimated_billed_tokens=st.billable_tokens_per_epoch * epochs
        )
    validation = None
    overlap: list[Issue] = []
    overlap_total = 0
    if validation_path is not None:
        # The validation file must have the train file's format.
        val_kind: KindArg = train.kind if kind == "auto" and train.kind else kind
        validation, val_hashes = validate_file_with_hashes(validation_path, val_kind, n_epochs=epochs, **opts)
        pairs = train_hashes.overlap(val_hashes)
        overlap_total = len(pairs)
        if pairs:
            shown = ", ".join(f"train {t} = validation {v}" for t, v in pairs[:OVERLAP_PAIRS_SHOWN])
            more = f" (+{len(pairs) - OVERLAP_PAIRS_SHOWN} more)" if len(pairs) > OVERLAP_PAIRS_SHOWN else ""
            overlap.append(
                Issue(
                    str(validation_path),
                    0,
                    "$",
                    f"{len(pairs)} examples also appear in the training file: {shown}{more}",
                    "warning",
                )
            )
    return DatasetReport(
        train, validation, overlap, overlap_total, epochs, train.stats.billable_tokens_per_epoch * epochs
    )
