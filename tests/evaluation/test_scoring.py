"""Scoring against hand-computed values, and every check's pass/fail rule."""

from __future__ import annotations

import pytest

from evaluation.evalset import EvalCase
from evaluation.scoring import exact_match, rouge_l, run_checks, score_answer, token_f1, tokens


def test_tokens_fold_case_and_drop_punctuation_but_keep_non_latin() -> None:
    assert tokens("Hi there! Order A-12345, OK?") == ["hi", "there", "order", "a", "12345", "ok"]
    assert tokens("Größe: 5 — привет") == ["grösse", "5", "привет"]  # casefold: ß -> ss


def test_exact_match_ignores_case_punctuation_and_spacing() -> None:
    assert exact_match("Hello,   World!", "hello world") == 1.0
    assert exact_match("hello world again", "hello world") == 0.0


def test_token_f1_hand_computed() -> None:
    # 3 common tokens; precision 3/3, recall 3/6 -> F1 = 2 * 1 * 0.5 / 1.5 = 2/3
    assert token_f1("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    # bag of tokens: "the" twice in both -> common = min counts; answer 4 tokens, ref 6, common 4
    # precision 1, recall 4/6 -> F1 = 0.8
    assert token_f1("the the cat mat", "the cat sat on the mat") == pytest.approx(0.8)
    assert token_f1("dog", "the cat") == 0.0
    assert token_f1("", "the cat") == 0.0
    assert token_f1("", "") == 1.0


def test_rouge_l_hand_computed() -> None:
    # LCS("the cat on the mat", "the cat sat on the mat") = 5; P = 5/5, R = 5/6 -> F = 10/11
    assert rouge_l("the cat on the mat", "the cat sat on the mat") == pytest.approx(10 / 11)
    # order matters for ROUGE-L but not for F1: LCS("mat the cat", "the cat mat") = 3 of 3 -> 1.0 vs 2/3
    assert rouge_l("cat the", "the cat") == pytest.approx(0.5)
    assert token_f1("cat the", "the cat") == 1.0
    assert rouge_l("привет мир", "Привет, мир!") == 1.0  # rouge-score's own tokenizer would drop these
    assert rouge_l("", "the cat") == 0.0


def test_score_is_mean_of_reference_metrics_and_check_share() -> None:
    case = EvalCase(prompt="q", reference="the cat sat on the mat", must_contain=["cat"], max_chars=5)
    s = score_answer(case, "the cat on the mat")
    # F1: common 5, P 5/5, R 5/6 -> 10/11; ROUGE-L 10/11; checks: must_contain ok, max_chars 18 > 5 fails
    assert s.token_f1 == pytest.approx(10 / 11)
    assert s.rouge_l == pytest.approx(10 / 11)
    assert s.exact_match == 0.0
    assert [c.passed for c in s.checks] == [True, False]
    assert s.score == pytest.approx((10 / 11 + 10 / 11 + 0.5) / 3)
    assert s.failed_checks == "max_chars: 18 chars > 5"


def test_reference_only_and_checks_only_scores() -> None:
    assert score_answer(EvalCase(prompt="q", reference="a b"), "a b").score == 1.0
    only_checks = EvalCase(prompt="q", must_contain=["Hi"], must_not_contain=["sorry"])
    assert score_answer(only_checks, "hi there").score == 1.0
    assert score_answer(only_checks, "Sorry, hi").score == 0.5


def test_each_check_rule() -> None:
    case = EvalCase(
        prompt="q",
        must_contain=["Hi", "help"],
        must_not_contain=["refund"],
        regex=r"A-\d{5}",
        json_schema=None,
        max_chars=40,
    )
    results = {c.name: c for c in run_checks(case, "hi, order A-12345 ships; happy to HELP")}
    assert all(c.passed for c in results.values())
    results = {c.name: c for c in run_checks(case, "Hi! No REFUND for A-123")}
    assert results["must_contain"].detail == "missing ['help']"
    assert results["must_not_contain"].detail == "contains ['refund']"
    assert not results["regex"].passed
    assert results["max_chars"].passed


def test_json_schema_check() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    case = EvalCase(prompt="q", json_schema=schema)
    assert run_checks(case, '{"n": 3}')[0].passed
    assert run_checks(case, '```json\n{"n": 3}\n```')[0].passed  # one Markdown fence is tolerated
    wrong_type = run_checks(case, '{"n": "three"}')[0]
    assert not wrong_type.passed and wrong_type.detail.startswith("n: ")
    assert run_checks(case, "n is 3")[0].detail.startswith("not JSON")


def test_empty_answer_fails_every_check_even_must_not_contain() -> None:
    case = EvalCase(prompt="q", must_not_contain=["sorry"])
    assert [(c.passed, c.detail) for c in run_checks(case, "  ")] == [(False, "empty answer")]
    bare = EvalCase(prompt="q")  # the old smoke rule: a non-empty answer
    assert bare.check_names() == ["non_empty"]
    assert score_answer(bare, "").score == 0.0
    assert score_answer(bare, "x").score == 1.0
