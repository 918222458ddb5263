"""Streaming validator for chat and preference fine-tuning JSONL files.

from validation import validate_file, validate_dataset
report = validate_file("train.jsonl")          # kind="auto" | "chat" | "preference"
report.ok, report.errors, report.warnings, report.stats
"""

from validation.core import validate_file
from validation.dataset import validate_dataset
from validation.results import DatasetReport, DatasetStats, Issue, ValidationReport

__all__ = ["DatasetReport", "DatasetStats", "Issue", "ValidationReport", "validate_dataset", "validate_file"]
