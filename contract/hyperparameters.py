"""The one hyperparameter type, from CLI flags and flow parameters to the job-create body.

Each value is a number in the wire range or ``"auto"``. Numbers must be numbers (no ``"2"`` strings);
a bad value fails with the rule (``n_epochs must be an integer from 1 to 50, or 'auto'``), never with
pydantic's union noise.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from contract import wire


def _rule_checker(  # type: ignore[no-untyped-def]
    name: str, *, integer: bool, low: float, inclusive: bool, high: float | None = None, auto: bool = True
):
    rule = f"{name} must be {wire.HYPERPARAMETER_RULES[name]}"

    def check(value: Any) -> Any:
        if auto and value == wire.AUTO:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(rule)
        if isinstance(value, float) and not math.isfinite(value):  # NaN compares False with every bound
            raise ValueError(rule)
        if integer and (isinstance(value, float) and not value.is_integer()):
            raise ValueError(rule)
        below = value < low if inclusive else value <= low
        if below or (high is not None and value > high):
            raise ValueError(rule)
        return int(value) if integer else float(value)

    return check


# In a JSON Schema form (Prefect's run form) "auto" is a one-choice select next to a titled number input; a
# bare `const` renders as a greyed, uneditable field.
_AutoChoice = Annotated[
    Literal["auto"], WithJsonSchema({"type": "string", "enum": [wire.AUTO], "title": "auto (server decides)"})
]

NEpochs = Annotated[
    Annotated[int, Field(ge=wire.N_EPOCHS_MIN, le=wire.N_EPOCHS_MAX, title="number")] | _AutoChoice,
    BeforeValidator(
        _rule_checker("n_epochs", integer=True, low=wire.N_EPOCHS_MIN, inclusive=True, high=wire.N_EPOCHS_MAX)
    ),
]
BatchSize = Annotated[
    Annotated[int, Field(ge=wire.BATCH_SIZE_MIN, title="number")] | _AutoChoice,
    BeforeValidator(_rule_checker("batch_size", integer=True, low=wire.BATCH_SIZE_MIN, inclusive=True)),
]
LearningRateMultiplier = Annotated[
    Annotated[float, Field(gt=wire.LEARNING_RATE_MULTIPLIER_GT, title="number")] | _AutoChoice,
    BeforeValidator(
        _rule_checker(
            "learning_rate_multiplier", integer=False, low=wire.LEARNING_RATE_MULTIPLIER_GT, inclusive=False
        )
    ),
]
Beta = Annotated[
    Annotated[float, Field(gt=wire.BETA_GT, title="number")] | _AutoChoice,
    BeforeValidator(_rule_checker("beta", integer=False, low=wire.BETA_GT, inclusive=False)),
]
Seed = Annotated[
    Annotated[int, Field(ge=wire.SEED_MIN, le=wire.SEED_MAX)],
    BeforeValidator(
        _rule_checker("seed", integer=True, low=wire.SEED_MIN, inclusive=True, high=wire.SEED_MAX, auto=False)
    ),
]
MethodType = Literal["supervised", "dpo"]


class Hyperparameters(BaseModel):
    """Training hyperparameters; each a number or ``"auto"`` (the server decides). ``beta`` is DPO only."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: NEpochs = Field(default="auto", description="Passes over the training file (1-50 or auto)")
    batch_size: BatchSize = Field(default="auto", description="Examples per optimiser step (>= 1 or auto)")
    learning_rate_multiplier: LearningRateMultiplier = Field(
        default="auto", description="Scales the base learning rate (> 0 or auto)"
    )
    beta: Beta | None = Field(default=None, description="DPO only: strength of the preference penalty (> 0)")

    def wire(self, method: MethodType) -> dict[str, Any]:
        """The ``method`` object of a job-create body (``beta`` is sent for DPO only)."""
        values: dict[str, Any] = {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }
        if method == "dpo":
            values["beta"] = self.beta if self.beta is not None else wire.AUTO
        elif self.beta is not None:
            raise ValueError("beta applies to method 'dpo' only")
        return {"type": method, method: {"hyperparameters": values}}
