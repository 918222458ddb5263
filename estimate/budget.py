"""The budget a run must fit before anything is uploaded (pydantic only: flow parameters and the CLI read it)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

# The two limits as types, so the flow parameters declare them exactly as the budget does.
MaxCost = Annotated[
    float | None,
    Field(
        ge=0,
        description="Stop before any upload when the estimated training cost is higher (price's currency)",
    ),
]
MaxTokens = Annotated[
    int | None, Field(ge=1, description="Stop before any upload when more trained tokens are estimated")
]


class Budget(BaseModel):
    """Limits a run must fit in before anything is uploaded; None: no limit."""

    max_cost: MaxCost = None
    max_tokens: MaxTokens = None

    @property
    def is_set(self) -> bool:
        return self.max_cost is not None or self.max_tokens is not None
