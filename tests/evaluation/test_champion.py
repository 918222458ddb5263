"""Champion promotion: kept when the candidate is worse, re-scored when the eval set changed, history kept."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.champion import (
    ChampionRecord,
    PrefectVariables,
    decide,
    promote,
    read_champion,
    read_history,
    variable_name,
)


class DictStore:
    """In-memory VariableStore."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str) -> Any | None:
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


def _rec(model: str, score: float, eval_hash: str = "sha256:aaa", **kw: Any) -> ChampionRecord:
    return ChampionRecord(
        name="support-bot",
        model_id=model,
        job_id="ftjob-1",
        eval_score=score,
        base_score=0.05,
        eval_set_hash=eval_hash,
        eval_set_size=40,
        promoted_at="2026-12-01T00:00:00+00:00",
        **kw,
    )


def test_first_candidate_becomes_champion() -> None:
    store = DictStore()
    decision = decide(read_champion(store, "support-bot"), _rec("ft:a", 0.4))
    assert decision.promote and "no champion yet" in decision.message
    promote(store, _rec("ft:a", 0.4))
    assert store.values["ftpipe-champion-support-bot"]["model_id"] == "ft:a"
    assert read_champion(store, "support-bot") == _rec("ft:a", 0.4)


def test_worse_candidate_keeps_the_champion_and_store_is_unchanged() -> None:
    store = DictStore()
    promote(store, _rec("ft:a", 0.4))
    before = dict(store.values)
    decision = decide(read_champion(store, "support-bot"), _rec("ft:b", 0.35))
    assert not decision.promote
    assert decision.message == "kept champion ft:a (score 0.4000) over candidate ft:b (score 0.3500)"
    assert store.values == before


def test_equal_or_better_candidate_replaces_and_history_grows() -> None:
    store = DictStore()
    promote(store, _rec("ft:a", 0.4))
    decision = decide(read_champion(store, "support-bot"), _rec("ft:b", 0.4))
    assert decision.promote and "over champion ft:a (score 0.4000)" in decision.message
    promote(store, _rec("ft:b", 0.4))
    assert [r.model_id for r in read_history(store, "support-bot")] == ["ft:a", "ft:b"]


def test_changed_eval_set_compares_against_the_rescored_champion() -> None:
    current = _rec("ft:a", 0.9, eval_hash="sha256:old")
    # On the old set the champion scored 0.9, but re-scored on the new set it gets 0.3: the candidate wins.
    win = decide(current, _rec("ft:b", 0.5, eval_hash="sha256:new"), current_rescored=0.3)
    assert win.promote and "re-scored" in win.message and win.compared_score == 0.3
    lose = decide(current, _rec("ft:b", 0.5, eval_hash="sha256:new"), current_rescored=0.6)
    assert not lose.promote and "kept champion ft:a (score 0.6000)" in lose.message
    gone = decide(current, _rec("ft:b", 0.5, eval_hash="sha256:new"), current_rescored=None)
    assert gone.promote and "could not be re-scored" in gone.message


def test_same_model_is_not_promoted_twice() -> None:
    decision = decide(_rec("ft:a", 0.4), _rec("ft:a", 0.4))
    assert not decision.promote and decision.message == "ft:a is already the champion"


def test_history_stays_under_prefects_value_limit() -> None:
    store = DictStore()
    for i in range(60):
        promote(store, _rec(f"ft:model-{i}", 0.4))
    history = read_history(store, "support-bot")
    assert 1 < len(history) < 60 and history[-1].model_id == "ft:model-59"
    import json

    assert len(json.dumps(store.values["ftpipe-champion-support-bot-history"])) < 5000


@pytest.mark.parametrize("bad", ["Support", "a b", "", "-x", "x" * 65, "a/b"])
def test_name_rule(bad: str) -> None:
    with pytest.raises(ValueError, match="lowercase letters"):
        variable_name(bad)


@pytest.mark.usefixtures("prefect_harness")
def test_prefect_variables_round_trip() -> None:
    store = PrefectVariables()
    assert read_champion(store, "harness-bot") is None
    promote(store, _rec("ft:a", 0.4).model_copy(update={"name": "harness-bot"}))
    promote(store, _rec("ft:b", 0.5).model_copy(update={"name": "harness-bot"}))
    from prefect.variables import Variable

    assert Variable.get("ftpipe-champion-harness-bot")["model_id"] == "ft:b"
    assert [r.model_id for r in read_history(store, "harness-bot")] == ["ft:a", "ft:b"]
