"""The fine-tune flow's judging step: which prompts and models to evaluate, the gate, champion promotion.

``plan_judging`` runs before any compute is spent (a bad eval file or a contradictory option fails the run
at once); ``judge_run`` runs after the metrics stage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from client import ClientSettings
from client.models import FineTuningJob
from evaluation.champion import (
    ChampionRecord,
    ChampionStoreError,
    Decision,
    VariableStore,
    check_name,
    decide,
    promote,
    read_champion,
)
from evaluation.evalset import EvalCase, EvalSet, EvalSetError, cases_from_dataset_file, load_eval_file
from evaluation.gate import GateThresholds, check_gate
from evaluation.outcome import EvalSetInfo, EvaluationReport
from evaluation.results import EvalModel
from evaluation.scoring import SCORE_VERSION
from evaluation.selection import SelectBy
from tasks import runtime
from tasks.errors import EvalSetInvalid
from tasks.eval_cache import AnswerCache
from tasks.evaluate import EvalOptions, ModelAnswers, evaluate_task
from tasks.state import key_lock

if TYPE_CHECKING:
    from flows.eval_ahead import EvalAhead

# key_lock name of a champion's read-compare-write (one Prefect Variable pair per name).
CHAMPION_LOCK_PREFIX = "champion|"


@dataclass(frozen=True)
class JudgePlan:
    """Everything the judging step needs that does not depend on the trained job."""

    eval_set: EvalSet | None
    smoke_set: EvalSet | None
    select_by: SelectBy
    thresholds: GateThresholds
    promote_as: str | None
    options: EvalOptions

    @property
    def fingerprint(self) -> str | None:
        """The eval set's identity for champion comparisons (cases + scoring version + output cap)."""
        if self.eval_set is None:
            return None
        return self.eval_set.fingerprint(
            score_version=SCORE_VERSION, max_output_tokens=self.options.max_output_tokens
        )

    def for_server(self, *, embedded: bool) -> JudgePlan:
        """This plan with its eval concurrency resolved for the server asked (`EvalOptions.for_server`)."""
        return replace(self, options=self.options.for_server(embedded=embedded))

    @property
    def sets(self) -> list[EvalSet]:
        """The sets to ask, eval first."""
        return [s for s in (self.eval_set, self.smoke_set) if s is not None and s.cases]


def plan_judging(
    *,
    evaluate: bool,
    eval_file: Path | None,
    validation_file: Path | None,
    smoke_file: Path | None,
    smoke_cases: list[EvalCase],
    select_by: SelectBy | None,
    min_score: float | None,
    min_improvement: float | None,
    promote_as: str | None,
    options: EvalOptions,
    min_improvement_is_default: bool = True,
) -> JudgePlan:
    """Load the eval and smoke sets and check the options against them; raise ``EvalSetInvalid`` (one line)."""
    try:
        if not evaluate:
            eval_set: EvalSet | None = None
        elif eval_file is not None:
            eval_set = load_eval_file(eval_file)
        elif validation_file is not None:
            eval_set = cases_from_dataset_file(validation_file)
        else:
            eval_set = None
        smoke_set = load_eval_file(smoke_file, kind="smoke") if smoke_file is not None else None
    except EvalSetError as exc:
        raise EvalSetInvalid(str(exc)) from None
    if smoke_cases:
        smoke_set = EvalSet(
            kind="smoke",
            source=smoke_set.source + " + parameters" if smoke_set else "parameters",
            cases=[*(smoke_set.cases if smoke_set else []), *smoke_cases],
        )
    if eval_set is not None and not eval_set.cases:
        eval_set = None  # e.g. a validation file made only of tool-call conversations
    no_eval = (
        "give an eval set (eval.jsonl in the dataset folder, an eval file, or a validation file)"
        if evaluate
        else "the eval stage is turned off"
    )
    if eval_set is None:
        if select_by == "eval_score":
            raise EvalSetInvalid(f"select_by eval_score needs eval prompts: {no_eval}")
        if min_score is not None or (min_improvement is not None and not min_improvement_is_default):
            raise EvalSetInvalid(f"the gate's score thresholds need eval prompts: {no_eval}")
        if promote_as is not None:
            raise EvalSetInvalid(f"promotion compares eval scores: {no_eval}")
        thresholds = GateThresholds(min_score=None, min_improvement=None)
    else:
        thresholds = GateThresholds(min_score=min_score, min_improvement=min_improvement)
    if promote_as is not None:
        try:
            check_name(promote_as)
        except ValueError as exc:
            raise EvalSetInvalid(str(exc)) from None
    return JudgePlan(
        eval_set=eval_set,
        smoke_set=smoke_set,
        select_by=select_by or ("eval_score" if eval_set is not None else "full_valid_loss"),
        thresholds=thresholds,
        promote_as=promote_as,
        options=options,
    )


def current_champion(plan: JudgePlan, store: VariableStore) -> ChampionRecord | None:
    """The champion the candidate will face (None when not promoting or none yet); one-line error if unreadable."""
    if plan.promote_as is None:
        return None
    try:
        return read_champion(store, plan.promote_as)
    except ChampionStoreError as exc:
        raise EvalSetInvalid(str(exc)) from None


def models_to_ask(
    base_model: str,
    job: FineTuningJob,
    checkpoints_parquet: Path | None,
    final_metrics: dict[str, float],
    champion: ChampionRecord | None,
    *,
    with_base: bool = True,
    final_step: int | None = None,
) -> list[EvalModel]:
    """Base, each checkpoint (by step), the fine-tuned model, and the champion when it needs re-scoring.

    Without eval prompts (``with_base`` False) only the candidates are asked: their smoke checks. A checkpoint
    taken at the job's last step (``final_step``) holds the fine-tuned model's weights, so it is asked once, as
    the fine-tuned model.
    """
    import pandas as pd

    models = [EvalModel(base_model, "base")] if with_base else []
    last_step: int | None = None
    if checkpoints_parquet is not None and checkpoints_parquet.is_file():
        frame = pd.read_parquet(checkpoints_parquet).dropna(subset=["model"]).sort_values("step")
        for row in frame.to_dict("records"):
            step = None if pd.isna(row["step"]) else int(row["step"])
            loss = None if pd.isna(row["full_valid_loss"]) else float(row["full_valid_loss"])
            last_step = step if step is not None else last_step
            if final_step is None or step != final_step:
                models.append(EvalModel(str(row["model"]), "checkpoint", step=step, full_valid_loss=loss))
    assert job.fine_tuned_model is not None
    models.append(
        EvalModel(
            job.fine_tuned_model,
            "fine-tuned",
            step=last_step,
            full_valid_loss=final_metrics.get("full_valid_loss"),
        )
    )
    if champion is not None and champion.model_id not in {m.model for m in models}:
        models.append(EvalModel(champion.model_id, "champion"))
    return models


def checkpoint_at(checkpoints_parquet: Path | None, step: int | None) -> str | None:
    """The model id of the checkpoint taken at ``step`` (None when there is none)."""
    import pandas as pd

    if step is None or checkpoints_parquet is None or not checkpoints_parquet.is_file():
        return None
    frame = pd.read_parquet(checkpoints_parquet).dropna(subset=["model", "step"])
    hits = frame[frame["step"] == step]
    return str(hits["model"].iloc[-1]) if len(hits) else None


def collect_answers(
    ahead: EvalAhead | None, models: list[EvalModel], final_twin: str | None
) -> dict[str, ModelAnswers]:
    """Answers of ``models`` by model id from the work ``ahead`` did (and does now for the models left).

    ``final_twin``: the checkpoint saved at the job's last step, which holds the fine-tuned model's weights.
    When it was asked while the job trained, its answers stand for the fine-tuned model's (greedy answers
    are a function of the weights), so nothing is left to ask after training.
    """
    if ahead is None or not ahead.started:
        return {}
    final = next(m for m in models if m.role == "fine-tuned")
    twin = final_twin if final_twin is not None and ahead.is_queued(final_twin) else None
    answers = ahead.finish([m for m in models if twin is None or m is not final])
    if twin is not None and twin in answers:
        answers[final.model] = answers[twin]
    return {m.model: answers[m.model] for m in models if m.model in answers}


def promote_if_better(
    store: VariableStore, state_dir: Path, candidate: ChampionRecord, rescored: Mapping[str, float]
) -> Decision:
    """Compare ``candidate`` with the champion as it is now and promote it if it wins, under one lock.

    Runs promoting the same name take turns (``key_lock``): each re-reads the champion inside the lock, so a
    run that finished judging after another one promoted compares against that one instead of overwriting
    it, and the record and its history are written by one run at a time. ``rescored``: this run's scores per
    model, used when the champion was scored on another eval set.
    """
    with key_lock(state_dir, CHAMPION_LOCK_PREFIX + candidate.name):
        latest = read_champion(store, candidate.name)
        decision = decide(latest, candidate, rescored.get(latest.model_id) if latest is not None else None)
        if decision.promote:
            promote(store, candidate)
    return decision


@dataclass(frozen=True)
class Judgement:
    """The report for result.json, the files written, and the selected model's smoke results."""

    report: EvaluationReport
    files: dict[str, Path]
    smoke_passed: bool | None
    smoke_answers: list[dict[str, str]]


def _info(s: EvalSet | None, fingerprint: str | None = None) -> EvalSetInfo | None:
    if s is None:
        return None
    return EvalSetInfo(
        source=s.source, kind=s.kind, size=len(s.cases), fingerprint=fingerprint, skipped=s.skipped
    )


def judge_run(
    *,
    plan: JudgePlan,
    settings: ClientSettings,
    transport: httpx.BaseTransport | None,
    base_model: str,
    job: FineTuningJob,
    checkpoints_parquet: Path | None,
    final_metrics: dict[str, float],
    output_dir: Path,
    flow_run_id: str | None,
    store: VariableStore,
    state_dir: Path,
    final_step: int | None = None,
    ahead: EvalAhead | None = None,
    cache: AnswerCache | None = None,
) -> Judgement:
    """Evaluate, select, gate and (when asked and the gate passed) promote.

    ``ahead``: the eval work started while the job trained (the models it did not ask yet are asked by it
    now); without it every model is asked here. ``cache``: answers kept from earlier runs.
    """
    log = runtime.run_logger()
    fingerprint = plan.fingerprint
    champion = current_champion(plan, store)
    rescore = champion if champion is not None and champion.eval_set_hash != fingerprint else None
    models = models_to_ask(
        base_model,
        job,
        checkpoints_parquet,
        final_metrics,
        rescore,
        with_base=plan.eval_set is not None,
        final_step=final_step,
    )
    answered = collect_answers(ahead, models, checkpoint_at(checkpoints_parquet, final_step))
    outcome = evaluate_task(
        settings,
        models,
        runtime.quoted(plan.sets),
        output_dir,
        select_by=plan.select_by,
        options=plan.options,
        transport=transport,
        answered=runtime.quoted(answered),
        cache=cache,
    )
    by_model = {s.model: s for s in outcome.summaries}
    selected = by_model[outcome.selection.model]
    base = next((s for s in outcome.summaries if s.role == "base"), None)
    gate = check_gate(selected, base, plan.thresholds)
    report = EvaluationReport(
        eval_set=_info(plan.eval_set, fingerprint),
        smoke_set=_info(plan.smoke_set),
        models=outcome.summaries,
        selected=outcome.selection,
        gate_passed=gate.passed if gate.checked else None,
        gate=plan.thresholds,
        gate_failures=gate.failures,
        duration_s=outcome.duration_s,
        calls=outcome.calls,
        cached_answers=outcome.cached,
    )
    smoke = outcome.frame[(outcome.frame["set"] == "smoke") & (outcome.frame["model"] == selected.model)]
    judgement = Judgement(
        report=report,
        files=outcome.files,
        smoke_passed=selected.smoke_passed,
        smoke_answers=[
            {"prompt": str(r["prompt"]), "output": "" if r["answer"] is None else str(r["answer"])}
            for r in smoke.astype(object).where(smoke.notna(), None).to_dict("records")
        ],
    )
    log.info("%s", gate.reason() if gate.checked else "no gate thresholds to check")
    if plan.promote_as is None or not gate.passed:
        if plan.promote_as is not None:
            report.promotion = f"not promoted as {plan.promote_as}: {gate.reason()}"
        return judgement
    assert plan.eval_set is not None and fingerprint is not None and selected.score is not None
    candidate = ChampionRecord(
        name=plan.promote_as,
        model_id=selected.model,
        job_id=job.id,
        step=selected.step if selected.role == "checkpoint" else None,
        eval_score=selected.score,
        base_score=base.score if base is not None else None,
        eval_set_hash=fingerprint,
        eval_set_size=len(plan.eval_set.cases),
        promoted_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        flow_run_id=flow_run_id,
    )
    rescored = {m: s.score for m, s in by_model.items() if s.complete and s.score is not None}
    decision = promote_if_better(store, state_dir, candidate, rescored)
    log.info("champion %s: %s", plan.promote_as, decision.message)
    report.promotion = decision.message
    report.promoted = decision.promote
    return judgement
