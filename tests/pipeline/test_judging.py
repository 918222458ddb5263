"""flows.judging: which models are asked, and the up-front checks of the eval options."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from client.models import FineTuningJob
from evaluation.champion import ChampionRecord
from flows.judging import models_to_ask, plan_judging
from tasks.errors import EvalSetInvalid
from tasks.evaluate import EvalOptions
from tests.pipeline.conftest import chat_example, write_jsonl

JOB = FineTuningJob.model_validate(
    {"id": "ftjob-1", "model": "base", "status": "succeeded", "fine_tuned_model": "ft:final", "created_at": 1}
)


def _checkpoints(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoints.parquet"
    pd.DataFrame(
        {
            "model": ["ft:ck-20", "ft:ck-10", "ft:ck-30"],
            "step": [20, 10, 30],
            "full_valid_loss": [1.5, 2.0, None],
        }
    ).to_parquet(path)
    return path


def test_models_in_step_order_and_the_last_step_checkpoint_is_the_final_model(tmp_path: Path) -> None:
    models = models_to_ask("base", JOB, _checkpoints(tmp_path), {"full_valid_loss": 1.2}, None, final_step=30)
    assert [(m.model, m.role, m.step) for m in models] == [
        ("base", "base", None),
        ("ft:ck-10", "checkpoint", 10),
        ("ft:ck-20", "checkpoint", 20),
        ("ft:final", "fine-tuned", 30),
    ]
    assert models[-1].full_valid_loss == 1.2 and models[2].full_valid_loss == 1.5
    unknown_end = models_to_ask("base", JOB, _checkpoints(tmp_path), {}, None)
    assert [m.model for m in unknown_end][-2:] == ["ft:ck-30", "ft:final"]  # no final step known: ask it too


def test_a_champion_to_rescore_is_asked_last_and_smoke_only_runs_skip_the_base(tmp_path: Path) -> None:
    champion = ChampionRecord(
        name="bot", model_id="ft:old", eval_score=0.5, eval_set_hash="h", eval_set_size=3, promoted_at="t"
    )
    models = models_to_ask("base", JOB, None, {}, champion, with_base=False)
    assert [(m.model, m.role) for m in models] == [("ft:final", "fine-tuned"), ("ft:old", "champion")]


def test_plan_rejects_options_that_need_eval_prompts(tmp_path: Path) -> None:
    train_only = write_jsonl(tmp_path / "train.jsonl", [chat_example(i) for i in range(3)])
    base = {
        "eval_file": None,
        "validation_file": None,
        "smoke_file": None,
        "smoke_cases": [],
        "options": EvalOptions(),
    }
    plan = plan_judging(
        evaluate=True, select_by=None, min_score=None, min_improvement=0.01, promote_as=None, **base
    )
    assert (
        plan.eval_set is None
        and plan.select_by == "full_valid_loss"
        and plan.thresholds.min_improvement is None
    )
    with pytest.raises(EvalSetInvalid, match="select_by eval_score needs eval prompts"):
        plan_judging(
            evaluate=True,
            select_by="eval_score",
            min_score=None,
            min_improvement=None,
            promote_as=None,
            **base,
        )
    with pytest.raises(EvalSetInvalid, match="score thresholds need eval prompts"):
        plan_judging(
            evaluate=True, select_by=None, min_score=0.5, min_improvement=None, promote_as=None, **base
        )
    with pytest.raises(EvalSetInvalid, match="the eval stage is turned off"):
        plan_judging(
            evaluate=False,
            select_by=None,
            min_score=None,
            min_improvement=0.01,
            promote_as="bot",
            **base | {"validation_file": train_only},
        )
