"""Result types of the validator: issues, per-file statistics and reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]
Kind = Literal["chat", "preference"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem; ``line`` is 1-based (0 = the whole file), ``field`` a dotted path ("$" = whole line)."""

    file: str
    line: int
    field: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        # line 0 means "the whole file" (empty, wrong format, too few examples): no line to point at.
        if self.line > 0:
            return f"{self.file}:{self.line}: {self.field}: {self.message}"
        return (
            f"{self.file}: {self.message}"
            if self.field == "$"
            else f"{self.file}: {self.field}: {self.message}"
        )


@dataclass(frozen=True, slots=True)
class DatasetStats:
    """What a file holds, counted over its valid examples; token figures use ``validation.tokens``."""

    lines: int = 0
    bytes: int = 0
    examples: int = 0
    messages: int = 0
    min_tokens: int = 0
    mean_tokens: float = 0.0
    max_tokens: int = 0
    total_tokens: int = 0
    token_limit: int = 0
    examples_over_limit: int = 0
    billable_tokens_per_epoch: int = 0
    n_epochs: int = 0
    estimated_billed_tokens: int = 0
    role_counts: dict[str, int] = field(default_factory=dict)
    examples_with_system: int = 0
    examples_with_tool_calls: int = 0
    multi_turn_examples: int = 0
    examples_with_weight_zero: int = 0


@dataclass(slots=True)
class ValidationReport:
    """Result of validating one JSONL file. At most ``max_issues`` errors and as many warnings are kept;
    ``error_count_total``/``warning_count_total`` count every issue found."""

    file: str
    kind: Kind | None
    errors: list[Issue]
    warnings: list[Issue]
    error_count_total: int
    warning_count_total: int
    stats: DatasetStats
    max_issues: int

    @property
    def ok(self) -> bool:
        """True when the file has no errors (warnings allowed)."""
        return self.error_count_total == 0

    @property
    def issue_count_total(self) -> int:
        """All issues found, including those beyond the ``max_issues`` cap."""
        return self.error_count_total + self.warning_count_total

    @property
    def truncated(self) -> bool:
        """True when some issues were counted but not kept."""
        return self.issue_count_total > len(self.errors) + len(self.warnings)


@dataclass(slots=True)
class DatasetReport:
    """Train (+ optional validation) reports, the overlap check between them and the billing estimate."""

    train: ValidationReport
    validation: ValidationReport | None
    overlap: list[Issue]
    overlap_count_total: int
    n_epochs: int
    estimated_billed_tokens: int

    @property
    def ok(self) -> bool:
        """True when neither file has errors."""
        return self.train.ok and (self.validation is None or self.validation.ok)

    @property
    def errors(self) -> list[Issue]:
        """Kept errors of both files."""
        return [*self.train.errors, *(self.validation.errors if self.validation else [])]

    @property
    def warnings(self) -> list[Issue]:
        """Kept warnings of both files plus the overlap warnings."""
        return [*self.train.warnings, *(self.validation.warnings if self.validation else []), *self.overlap]
