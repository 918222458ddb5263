"""Shared paths for the validation tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "bad"
WARN = ROOT / "tests" / "data" / "warn"
DATASETS = ROOT / "datasets"
SAMPLE_FILES = [
    DATASETS / "customer-support" / "train.jsonl",
    DATASETS / "customer-support" / "validation.jsonl",
    DATASETS / "preference-sample" / "train.jsonl",
    DATASETS / "preference-sample" / "validation.jsonl",
]
