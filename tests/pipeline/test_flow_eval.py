"""The flow's eval stage against the fake API: scores in result.json, gate failure, champion promotion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prefect.variables import Variable

from cli.main import main
from flows.backend_runtime import use_connection
from flows.fine_tune import fine_tune
from flows.params import FineTuneParams
from tasks.errors import EvalSetInvalid, GateFailed
from tasks.record import RunRecord
from tests.pipeline.fake_api import FakeMKA1
from tests.pipeline.flow_params import micro_chat_params

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _params(dataset_dir: Path, tmp_path: Path, **kw: Any) -> FineTuneParams:
    return micro_chat_params(dataset_dir, tmp_path, **kw)


def test_eval_scores_base_checkpoints_and_final_and_promotes(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with use_connection(fake.connection()):
        result = fine_tune(**_params(dataset_dir, tmp_path, seed=1, promote_as="fake-bot").flow_arguments())
    ev = result.evaluation
    assert ev is not None and ev.eval_set is not None and ev.eval_set.size == 10  # validation-derived
    roles = [(m.role, m.step) for m in ev.models]
    assert roles == [("base", None), ("checkpoint", 1), ("checkpoint", 2), ("fine-tuned", 2)]
    scores = {m.role: m.score for m in ev.models}
    assert scores["base"] == 0.0 and scores["fine-tuned"] == 1.0
    assert ev.selected is not None and ev.selected.model == result.fine_tuned_model  # ties go to the final
    assert ev.gate_passed is True and ev.gate.min_improvement == 0.01
    assert result.promoted_as == "fake-bot" and result.smoke_passed is True
    champion = Variable.get("ftpipe-champion-fake-bot")
    assert champion["model_id"] == result.fine_tuned_model and champion["job_id"] == result.job_id
    assert champion["eval_score"] == 1.0 and champion["base_score"] == 0.0
    assert champion["eval_set_hash"] == ev.eval_set.fingerprint
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["promoted_as"] == "fake-bot" and saved["evaluation"]["score_name"] == "score"
    assert RunRecord.model_validate(saved).evaluation == ev
    assert (tmp_path / "out" / "eval.parquet").is_file() and (tmp_path / "out" / "eval.csv").is_file()

    assert main(["models", "champion", "fake-bot", "--id-only"]) == 0
    assert capsys.readouterr().out.strip() == result.fine_tuned_model


def test_gate_failure_fails_the_run_and_promotes_nothing(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path
) -> None:
    previous = {
        "name": "gate-bot",
        "model_id": "ft:previous",
        "eval_score": 0.5,
        "eval_set_hash": "sha256:other",
        "eval_set_size": 3,
        "promoted_at": "2026-11-30T02:00:00+00:00",
    }
    Variable.set("ftpipe-champion-gate-bot", previous, overwrite=True)
    before = Variable.get("ftpipe-champion-gate-bot")
    fake.reply = lambda model, prompt: "Item 3 is red." if model.startswith("ft:") else "no"
    with use_connection(fake.connection()), pytest.raises(GateFailed) as info:
        fine_tune(
            **_params(
                dataset_dir, tmp_path, seed=2, gate_min_score=0.99, promote_as="gate-bot"
            ).flow_arguments()
        )
    message = str(info.value)
    assert message.startswith("gate failed: min_score: ft:") and "below the threshold 0.9900" in message
    assert "\n" not in message
    assert Variable.get("ftpipe-champion-gate-bot") == before
    saved = RunRecord.model_validate_json((tmp_path / "out" / "result.json").read_text())
    assert saved.evaluation is not None and saved.evaluation.gate_passed is False
    assert saved.promoted_as is None and saved.evaluation.promotion is not None
    assert saved.evaluation.promotion.startswith("not promoted as gate-bot: gate failed")
    # The champion was scored on another eval set, so it was asked again (it is unknown to the fake server).
    assert [m.role for m in saved.evaluation.models][-1] == "champion"


def test_unreadable_champion_record_fails_before_any_upload(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path
) -> None:
    Variable.set("ftpipe-champion-junk-bot", {"not": "a record"}, overwrite=True)
    with use_connection(fake.connection()), pytest.raises(EvalSetInvalid) as info:
        fine_tune(**_params(dataset_dir, tmp_path, promote_as="junk-bot").flow_arguments())
    assert "does not hold a champion record" in str(info.value) and "\n" not in str(info.value)
    assert fake.count("POST", "/files") == 0


def test_a_worse_model_keeps_the_champion(fake: FakeMKA1, dataset_dir: Path, tmp_path: Path) -> None:
    with use_connection(fake.connection()):
        first = fine_tune(
            **_params(dataset_dir, tmp_path / "a", seed=3, promote_as="keep-bot").flow_arguments()
        )
    assert first.promoted_as == "keep-bot"
    # Half right: "Item N is" matches, the colour does not.
    fake.reply = lambda model, prompt: "Item is red and green." if model.startswith("ft:") else "no"
    with use_connection(fake.connection()):
        second = fine_tune(
            **_params(dataset_dir, tmp_path / "b", seed=4, promote_as="keep-bot").flow_arguments()
        )
    assert second.promoted_as is None and second.evaluation is not None
    assert second.evaluation.promotion is not None
    assert second.evaluation.promotion.startswith(f"kept champion {first.fine_tuned_model} (score 1.0000)")
    assert Variable.get("ftpipe-champion-keep-bot")["model_id"] == first.fine_tuned_model


def test_eval_file_with_checks_and_bad_eval_file(fake: FakeMKA1, dataset_dir: Path, tmp_path: Path) -> None:
    good = tmp_path / "eval.jsonl"
    good.write_text(
        json.dumps({"prompt": "What colour is item number 7?", "reference": "Item 7 is blue."})
        + "\n"
        + json.dumps({"prompt": "What colour is item number 8?", "regex": r"^Item \d+ is \w+\.$"})
        + "\n"
    )
    with use_connection(fake.connection()):
        params = _params(dataset_dir, tmp_path, seed=5, eval_file=good, select_by="full_valid_loss")
        result = fine_tune(**params.flow_arguments())
    ev = result.evaluation
    assert ev is not None and ev.eval_set is not None and ev.eval_set.size == 2
    assert ev.selected is not None and ev.selected.criterion == "full_valid_loss"
    assert next(m for m in ev.models if m.role == "fine-tuned").checks_pass_rate == 1.0

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "max_chars": "many"}\n')
    calls_before = fake.count("POST", "/files")
    with use_connection(fake.connection()), pytest.raises(EvalSetInvalid, match=r"bad.jsonl:1: max_chars: "):
        fine_tune(**_params(dataset_dir, tmp_path, seed=6, eval_file=bad).flow_arguments())
    assert fake.count("POST", "/files") == calls_before  # failed before anything was uploaded


def test_promotion_without_an_eval_set_is_refused_up_front(fake: FakeMKA1, tmp_path: Path) -> None:
    from tests.pipeline.conftest import chat_example, write_jsonl

    write_jsonl(tmp_path / "only" / "train.jsonl", [chat_example(i) for i in range(12)])
    with (
        use_connection(fake.connection()),
        pytest.raises(EvalSetInvalid, match="promotion compares eval scores"),
    ):
        fine_tune(**_params(tmp_path / "only", tmp_path, promote_as="x").flow_arguments())
    assert fake.count("POST", "/files") == 0


def test_no_eval_asks_only_the_candidates_their_smoke_checks(
    fake: FakeMKA1, dataset_dir: Path, tmp_path: Path
) -> None:
    with use_connection(fake.connection()):
        result = fine_tune(**_params(dataset_dir, tmp_path, seed=8, evaluate=False).flow_arguments())
    ev = result.evaluation
    assert ev is not None and ev.eval_set is None and ev.smoke_set is not None
    assert [m.role for m in ev.models] == ["checkpoint", "checkpoint", "fine-tuned"]
    assert ev.selected is not None and ev.selected.criterion == "full_valid_loss"
    assert ev.gate.min_improvement is None and ev.gate_passed is True  # the smoke checks were the gate
    assert fake.count("POST", "/responses") == 3  # one smoke prompt x three candidates
