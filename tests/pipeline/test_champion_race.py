"""Two runs promoting the same champion name at the same moment: the better model wins, the record and its
history are never torn (the read-compare-write is one turn under the per-key lock)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from evaluation.champion import ChampionRecord, read_champion, read_history, variable_name
from flows.judging import promote_if_better

NAME = "support-bot"


class SlowStore:
    """In-memory VariableStore whose reads take a while, as a Prefect API round trip does under load."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            value = self.values.get(key)
        time.sleep(0.05)  # the race window: the other run reads the same champion meanwhile
        return value

    def set(self, key: str, value: Any) -> None:
        time.sleep(0.01)
        with self._lock:
            self.values[key] = value


def _candidate(model: str, score: float) -> ChampionRecord:
    return ChampionRecord(
        name=NAME,
        model_id=model,
        job_id=f"job-{model}",
        eval_score=score,
        eval_set_hash="sha256:same",
        eval_set_size=20,
        promoted_at="2026-12-01T00:00:00+00:00",
    )


def _race(store: SlowStore, state_dir: Path, candidates: tuple[ChampionRecord, ...]) -> list[BaseException]:
    """Promote every candidate from its own thread, all released by one barrier; the errors raised."""
    barrier = threading.Barrier(len(candidates))
    errors: list[BaseException] = []

    def promote(candidate: ChampionRecord) -> None:
        try:
            barrier.wait(timeout=10)
            promote_if_better(store, state_dir, candidate, {})
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's assertion
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(c,)) for c in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


def test_two_promotions_released_together_keep_the_better_model_every_time(tmp_path: Path) -> None:
    better, worse = _candidate("ft:better", 0.61), _candidate("ft:worse", 0.42)
    for round_no in range(10):
        store = SlowStore()
        # Alternate which one starts first, so neither order is favoured by thread start-up.
        assert not _race(store, tmp_path / "state", (better, worse) if round_no % 2 else (worse, better))

        champion = read_champion(store, NAME)
        assert champion == better, f"round {round_no}: {champion}"
        history = read_history(store, NAME)
        # Never torn: the history ends with the current record, holds each promotion once, in order.
        assert history[-1] == champion
        assert [h.model_id for h in history] in (["ft:better"], ["ft:worse", "ft:better"]), history
        assert store.values[variable_name(NAME)] == better.model_dump(mode="json")
