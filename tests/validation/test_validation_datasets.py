"""The committed sample datasets are clean and reproducible from their generator."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
from vpaths import DATASETS, SAMPLE_FILES

from validation import validate_dataset, validate_file


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sample_file_validates_clean(path: Path) -> None:
    report = validate_file(path)
    assert report.ok and report.errors == [] and report.error_count_total == 0
    assert report.kind == ("preference" if "preference" in str(path) else "chat")


@pytest.mark.parametrize("name", ["customer-support", "preference-sample"])
def test_sample_dataset_has_no_overlap_and_a_billing_estimate(name: str) -> None:
    report = validate_dataset(
        DATASETS / name / "train.jsonl", DATASETS / name / "validation.jsonl", n_epochs=3
    )
    assert report.ok and report.overlap == [] and report.warnings == []
    assert report.estimated_billed_tokens == report.train.stats.billable_tokens_per_epoch * 3 > 0


def test_customer_support_shape() -> None:
    report = validate_file(DATASETS / "customer-support" / "train.jsonl")
    st = report.stats
    assert 250 <= st.examples <= 350
    assert 0.25 <= st.examples_with_system / st.examples <= 0.45
    assert st.multi_turn_examples > 0 and st.examples_with_weight_zero >= 2
    assert validate_file(DATASETS / "customer-support" / "validation.jsonl").stats.examples >= 30
    smoke = [
        json.loads(line) for line in (DATASETS / "customer-support" / "smoke.jsonl").read_text().splitlines()
    ]
    assert len(smoke) == 5
    assert all(isinstance(s["prompt"], str) and s["must_contain"] for s in smoke)


def test_generator_reproduces_committed_files() -> None:
    spec = importlib.util.spec_from_file_location("gen_cs", DATASETS / "generate_customer_support.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    rng = random.Random(gen.SEED)
    chat = gen.unique(gen.chat_example, rng, gen.N_TRAIN + gen.N_VALID)
    committed = (DATASETS / "customer-support" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert chat[: gen.N_TRAIN] == committed
