"""Per-answer metrics: exact match, token F1 and ROUGE-L against a reference, and the case's checks.

Both reference metrics see the same tokens: NFKC-normalised, case-folded runs of word characters, so
punctuation and case never count and non-Latin text is kept (rouge-score's own tokenizer drops it).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from evaluation.evalset import EvalCase

SCORE_NAME = "score"
SCORE_DEFINITION = (
    "per answer: the mean of token_f1 and rougeL_f1 against the reference and the share of checks passed "
    "(only the parts the case has); per model: the mean over the eval set, 0..1"
)
# Bumped whenever a metric or the score's definition changes: champions scored under another version
# are re-scored before being compared.
SCORE_VERSION = 1

_WORD = re.compile(r"\w+")
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*)\n\s*```$", re.DOTALL)


def tokens(text: str) -> list[str]:
    """The tokens both reference metrics compare."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def exact_match(answer: str, reference: str) -> float:
    """1.0 when the answer and the reference have the same tokens in the same order, else 0.0."""
    return float(tokens(answer) == tokens(reference))


def token_f1(answer: str, reference: str) -> float:
    """Harmonic mean of token precision and recall (bag of tokens, SQuAD style); 1.0 when both are empty."""
    got, want = tokens(answer), tokens(reference)
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


class _Tokenizer:
    """rouge-score's tokenizer interface over ``tokens``."""

    def tokenize(self, text: str) -> list[str]:
        return tokens(text)


@functools.cache
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # lazy: it imports nltk

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence) computed by the ``rouge-score`` package."""
    return float(_rouge_scorer().score(reference, answer)["rougeL"].fmeasure)


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict; ``detail`` says why it failed."""

    name: str
    passed: bool
    detail: str = ""


def _json_answer(answer: str) -> Any:
    text = answer.strip()
    fenced = _FENCE.match(text)
    return json.loads(fenced.group(1) if fenced else text)


def _check(name: str, case: EvalCase, answer: str) -> CheckResult:
    lowered = answer.casefold()
    if name == "non_empty":
        return CheckResult(name, True)
    if name == "must_contain":
        missing = [s for s in case.must_contain if s.casefold() not in lowered]
        return CheckResult(name, not missing, f"missing {missing}" if missing else "")
    if name == "must_not_contain":
        found = [s for s in case.must_not_contain if s.casefold() in lowered]
        return CheckResult(name, not found, f"contains {found}" if found else "")
    if name == "regex":
        ok = re.search(case.regex or "", answer) is not None
        return CheckResult(name, ok, "" if ok else f"no match for /{case.regex}/")
    if name == "max_chars":
        limit = case.max_chars or 0
        ok = len(answer) <= limit
        return CheckResult(name, ok, "" if ok else f"{len(answer)} chars > {limit}")
    if name == "json_schema":
        from jsonschema.validators import validator_for

        try:
            value = _json_answer(answer)
        except json.JSONDecodeError as exc:
            return CheckResult(name, False, f"not JSON: {exc.msg}")
        schema = case.json_schema or {}
        error = next(iter(validator_for(schema)(schema).iter_errors(value)), None)
        if error is None:
            return CheckResult(name, True)
        where = "/".join(str(p) for p in error.absolute_path) or "<root>"
        return CheckResult(name, False, f"{where}: {error.message}")
    raise ValueError(f"unknown check {name!r}")


def run_checks(case: EvalCase, answer: str) -> list[CheckResult]:
    """Every check of ``case`` on ``answer``; an empty answer fails them all (saying nothing is no pass)."""
    names = case.check_names()
    if not answer.strip():
        return [CheckResult(n, False, "empty answer") for n in names]
    return [_check(n, case, answer) for n in names]


@dataclass(frozen=True)
class AnswerScore:
    """Metrics of one answer; the reference metrics are None when the case has no reference."""

    score: float
    exact_match: float | None
    token_f1: float | None
    rouge_l: float | None
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def checks_passed(self) -> int:
        """How many checks passed."""
        return sum(c.passed for c in self.checks)

    @property
    def failed_checks(self) -> str:
        """``name: detail`` of each failed check, joined for a table cell."""
        return "; ".join(f"{c.name}: {c.detail}" for c in self.checks if not c.passed)


def score_answer(case: EvalCase, answer: str) -> AnswerScore:
    """Score one answer (see ``SCORE_DEFINITION``)."""
    parts: list[float] = []
    em = f1 = rl = None
    if case.reference is not None:
        em, f1, rl = (
            exact_match(answer, case.reference),
            token_f1(answer, case.reference),
            rouge_l(answer, case.reference),
        )
        parts += [f1, rl]
    checks = run_checks(case, answer)
    if checks:
        parts.append(sum(c.passed for c in checks) / len(checks))
    return AnswerScore(score=sum(parts) / len(parts), exact_match=em, token_f1=f1, rouge_l=rl, checks=checks)
