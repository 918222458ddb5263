"""``ftpipe validate``: check JSONL files the way the pipeline's first stage does."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.common import EXIT_FAILED, EXIT_OK, positive_int

MAX_ISSUES_SHOWN = 20

EPILOG = """examples:
  ftpipe validate datasets/customer-support/train.jsonl datasets/customer-support/validation.jsonl
  ftpipe validate prefs.jsonl --kind preference --max-issues 50
  ftpipe validate big.jsonl --min-examples 50 --token-limit 4096 --max-line-bytes 2000000
"""


def register(sub: Any) -> None:
    """Add ``validate`` to the command tree."""
    p = sub.add_parser(
        "validate",
        help="validate JSONL files (non-zero exit when invalid)",
        description="Validate chat or preference JSONL files; each file is checked on its own.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        configure=add_options,
    )
    p.set_defaults(handler=validate_command)


def add_options(p: argparse.ArgumentParser) -> None:
    """``validate``'s options; the limits' defaults are the validator's."""
    from validation.core import DEFAULT_MAX_LINE_BYTES, DEFAULT_MIN_EXAMPLES, DEFAULT_TOKEN_LIMIT

    p.add_argument("files", nargs="+", type=Path, help="JSONL files to check", metavar="FILE")
    p.add_argument(
        "--kind",
        choices=("auto", "chat", "preference"),
        default="auto",
        help="dataset format; auto detects it from the first example (default: %(default)s)",
    )
    p.add_argument(
        "--max-issues",
        type=int,
        default=MAX_ISSUES_SHOWN,
        help="show at most N errors and warnings per file (default: %(default)s)",
    )
    p.add_argument(
        "--min-examples",
        type=positive_int,
        default=DEFAULT_MIN_EXAMPLES,
        help="fewer examples is an error (default: %(default)s)",
    )
    p.add_argument(
        "--token-limit",
        type=positive_int,
        default=DEFAULT_TOKEN_LIMIT,
        help="longer examples get a truncation warning (default: %(default)s)",
    )
    p.add_argument(
        "--max-line-bytes",
        type=positive_int,
        default=DEFAULT_MAX_LINE_BYTES,
        help="longer lines are errors (default: %(default)s)",
    )


def report_lines(path: Path, report: Any, max_issues: int = MAX_ISSUES_SHOWN) -> list[str]:
    """One file's verdict, its capped errors and warnings, and its stats when valid (``ftpipe run`` too)."""
    from tasks.validate import cap_issues, stats_dict

    errors = [str(i) for i in report.errors]
    warnings = [str(i) for i in report.warnings]
    n_err, n_warn = report.error_count_total, report.warning_count_total
    verdict = "ok" if report.ok else "INVALID"
    lines = [f"{path}: {verdict} ({n_err} error(s), {n_warn} warning(s))"]
    lines += [f"  error: {line}" for line in cap_issues(errors, max_issues, total=n_err)]
    lines += [
        f"  warning: {line}" for line in cap_issues(warnings, max(0, max_issues - len(errors)), total=n_warn)
    ]
    if report.ok:
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in stats_dict(report.stats).items()))
    return lines


def validate_command(args: argparse.Namespace) -> int:
    """Validate each file alone; print located issues (capped) and exit non-zero if any has errors."""
    from rich.console import Console

    from validation import validate_file

    console = Console()
    worst = EXIT_OK
    for path in args.files:
        if not path.is_file():
            why = "is a folder, not a JSONL file" if path.is_dir() else "no such file"
            console.print(f"{path}: {why}", markup=False)
            worst = EXIT_FAILED
            continue
        report = validate_file(
            path,
            kind=args.kind,
            min_examples=args.min_examples,
            token_limit=args.token_limit,
            max_line_bytes=args.max_line_bytes,
        )
        for line in report_lines(path, report, args.max_issues):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        if not report.ok:
            worst = EXIT_FAILED
    return worst
