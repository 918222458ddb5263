"""Champions: the model that currently serves under a name, kept where downstream flows read it.

The record lives in the Prefect Variable ``ftpipe-champion-<name>`` (a JSON object, see ``ChampionRecord``),
and the records of every champion so far in ``ftpipe-champion-<name>-history`` (oldest dropped first when
the list would pass Prefect's 5000-character limit on a variable's value). Another flow reads it with::

    from prefect.variables import Variable
    model_id = Variable.get("ftpipe-champion-support-bot")["model_id"]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, Field, ValidationError

VARIABLE_PREFIX = "ftpipe-champion-"
HISTORY_SUFFIX = "-history"
# Prefect rejects variable values whose JSON is 5000 characters or more.
MAX_VALUE_CHARS = 5000
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ChampionRecord(BaseModel):
    """What downstream flows need to use a champion and to judge a challenger against it."""

    name: str
    model_id: str
    job_id: str | None = None
    step: int | None = Field(default=None, description="Checkpoint step when a checkpoint was promoted")
    eval_score: float = Field(description="Mean eval score on the eval set below")
    base_score: float | None = Field(default=None, description="The base model's score on the same set")
    score_name: str = "score"
    eval_set_hash: str
    eval_set_size: int
    promoted_at: str = Field(description="ISO 8601 UTC timestamp")
    flow_run_id: str | None = None


def check_name(name: str) -> str:
    """A champion name usable in a Prefect Variable name; raises ``ValueError`` saying the rule."""
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"champion name {name!r}: use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


def variable_name(name: str) -> str:
    """The Prefect Variable holding the current champion of ``name``."""
    return VARIABLE_PREFIX + check_name(name)


class VariableStore(Protocol):
    """Where champion records are kept (Prefect Variables in a run; a dict in unit tests)."""

    def get(self, key: str) -> Any | None:
        """The JSON value under ``key``, or None."""
        ...

    def set(self, key: str, value: Any) -> None:
        """Create or overwrite ``key``."""
        ...


class PrefectVariables:
    """``VariableStore`` on the Prefect API this process talks to."""

    def get(self, key: str) -> Any | None:
        """Read a Prefect Variable's value."""
        from prefect.variables import Variable

        return Variable.get(key, default=None)

    def set(self, key: str, value: Any) -> None:
        """Write a Prefect Variable (overwriting)."""
        from prefect.variables import Variable

        Variable.set(key, value, overwrite=True, tags=["ftpipe", "champion"])


class ChampionStoreError(ValueError):
    """A stored champion value is not a record this version understands."""


def read_champion(store: VariableStore, name: str) -> ChampionRecord | None:
    """The current champion of ``name``, or None when there is none yet."""
    key = variable_name(name)
    raw = store.get(key)
    if raw is None:
        return None
    try:
        return ChampionRecord.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        raise ChampionStoreError(
            f"Prefect Variable {key!r} does not hold a champion record ({exc.error_count()} problem(s); "
            f"first: {where}: {err['msg']}); delete or fix it"
        ) from None


def read_history(store: VariableStore, name: str) -> list[ChampionRecord]:
    """Every recorded champion of ``name``, oldest first (as far as the size limit kept them)."""
    raw = store.get(variable_name(name) + HISTORY_SUFFIX) or []
    return [ChampionRecord.model_validate(item) for item in raw if isinstance(item, dict)]


@dataclass(frozen=True)
class Decision:
    """Whether the candidate becomes champion, and the sentence that says so."""

    promote: bool
    message: str
    compared_score: float | None = None


def decide(
    current: ChampionRecord | None, candidate: ChampionRecord, current_rescored: float | None = None
) -> Decision:
    """Promote unless the current champion scores higher on the same eval set.

    ``current_rescored`` is the champion's score on the candidate's eval set, needed when the champion was
    scored on another one; when that is missing too (its model could not be asked), the candidate wins.
    """
    if current is None:
        return Decision(
            True, f"promoted {candidate.model_id} (score {candidate.eval_score:.4f}): no champion yet"
        )
    same_set = current.eval_set_hash == candidate.eval_set_hash
    if current.model_id == candidate.model_id and same_set:
        return Decision(False, f"{candidate.model_id} is already the champion", current.eval_score)
    theirs = current.eval_score if same_set else current_rescored
    if theirs is None:
        return Decision(
            True,
            f"promoted {candidate.model_id} (score {candidate.eval_score:.4f}): champion "
            f"{current.model_id} could not be re-scored on this eval set",
        )
    note = "" if same_set else " (champion re-scored: the eval set changed)"
    if candidate.eval_score >= theirs:
        return Decision(
            True,
            f"promoted {candidate.model_id} (score {candidate.eval_score:.4f}) over champion "
            f"{current.model_id} (score {theirs:.4f}){note}",
            theirs,
        )
    return Decision(
        False,
        f"kept champion {current.model_id} (score {theirs:.4f}) over candidate {candidate.model_id} "
        f"(score {candidate.eval_score:.4f}){note}",
        theirs,
    )


def _fit(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    while len(history) > 1 and len(json.dumps(history)) >= MAX_VALUE_CHARS:
        history = history[1:]
    return history


def promote(store: VariableStore, record: ChampionRecord) -> None:
    """Make ``record`` the champion of its name and append it to the history."""
    key = variable_name(record.name)
    value = record.model_dump(mode="json")
    history = [h for h in (store.get(key + HISTORY_SUFFIX) or []) if isinstance(h, dict)]
    store.set(key + HISTORY_SUFFIX, _fit([*history, value]))
    store.set(key, value)
