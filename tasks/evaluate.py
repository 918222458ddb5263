"""Stage: ask the base, fine-tuned and checkpoint models every eval (and smoke) prompt, score the answers.

Calls go through the Responses API with bounded concurrency, one model at a time (a server that keeps a few
models loaded never reloads one mid-run, and one that batches requests gets full batches). Requests set
``store: false``, so a repeated call creates nothing and the client retries transient failures in place
(``client.retry``). A prompt whose failure outlasts those retries is asked again in a later round, keeping
every answer already received; one still failing after the last round is a row error.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd
from prefect import task

from client import ClientSettings
from client import retry as client_retry
from client.async_client import AsyncMKA1Client
from client.errors import APIError
from client.models import InputMessage, ResponseCreateRequest
from client.retry import is_transient
from evaluation.evalset import EvalCase, EvalSet
from evaluation.frame import eval_frame, summarize
from evaluation.judge import judge_prompt, parse_grade
from evaluation.report import score_line, side_by_side_markdown, summary_rows
from evaluation.results import EvalModel, ModelSummary
from evaluation.scoring import score_answer
from evaluation.selection import SelectBy, Selection, select_best
from tasks import runtime
from tasks.errors import EvaluationFailed
from tasks.progress import ProgressUpdate, publish
from tasks.retry_policy import API_RETRIES, api_task_options

T = TypeVar("T")

JUDGE_MAX_OUTPUT_TOKENS = 16
# Rounds of asking a model the prompts still unanswered after the client's in-place retries: the budget the
# stage's task retries had, without re-asking what was already answered.
ASK_ROUNDS = API_RETRIES + 1


@dataclass(frozen=True)
class EvalOptions:
    """How the stage asks: output cap, parallel calls, optional judge model, rows in the side-by-side."""

    max_output_tokens: int = 96
    concurrency: int = 16
    judge_model: str | None = None
    side_by_side: int = 5


@dataclass(frozen=True)
class EvalOutcome:
    """The eval frame, per-model summaries (in ``models`` order), the selection and the files written."""

    frame: pd.DataFrame
    summaries: list[ModelSummary]
    selection: Selection
    files: dict[str, Path] = field(default_factory=dict)
    duration_s: float = 0.0
    calls: int = 0


def _request(model: str, case: EvalCase, max_output_tokens: int) -> ResponseCreateRequest:
    return ResponseCreateRequest(
        model=model,
        input=[InputMessage(role=m.role, content=m.content) for m in case.input_messages()],
        max_output_tokens=max_output_tokens,
        temperature=0,
        store=False,
    )


class _Asker:
    """Asks one eval set's prompts of the models and turns each answer into a frame row."""

    def __init__(self, client: AsyncMKA1Client, options: EvalOptions, total: int, stage: str) -> None:
        self.client = client
        self.options = options
        self.sem = asyncio.Semaphore(max(1, options.concurrency))
        self.total = total
        self.stage = stage
        self.done = 0
        self.calls = 0

    async def _judge(self, case: EvalCase, answer: str) -> int | None:
        assert self.options.judge_model is not None
        request = ResponseCreateRequest(
            model=self.options.judge_model,
            input=judge_prompt(case, answer),
            max_output_tokens=JUDGE_MAX_OUTPUT_TOKENS,
            temperature=0,
            store=False,
        )
        self.calls += 1
        return parse_grade((await self.client.responses.create(request)).output_text)

    async def ask(
        self,
        m: EvalModel,
        kind: str,
        index: int,
        case: EvalCase,
        failed: list[str],
        unanswered: list[tuple[str, int]],
    ) -> dict[str, Any]:
        """The row of one prompt; a transient failure (retries exhausted) also lands in ``unanswered``."""
        row: dict[str, Any] = {
            "set": kind,
            "case": index,
            "case_id": case.id,
            "model": m.model,
            "role": m.role,
            "step": m.step,
            "prompt": case.prompt_text(),
            "reference": case.reference,
        }
        async with self.sem:
            if failed:  # the model already refused a call for good: do not ask it again
                return row | {"error": f"not asked: {failed[0]}"}
            started = time.perf_counter()
            try:
                self.calls += 1
                resp = await self.client.responses.create(
                    _request(m.model, case, self.options.max_output_tokens)
                )
            except APIError as exc:
                if is_transient(exc):
                    unanswered.append((kind, index))  # asked again next round
                else:
                    failed.append(str(exc))
                return row | {"error": str(exc)}
            latency = time.perf_counter() - started
            answer = resp.output_text
            scored = score_answer(case, answer)
            try:
                grade = await self._judge(case, answer) if self.options.judge_model else None
            except APIError as exc:
                if not is_transient(exc):
                    raise
                unanswered.append((kind, index))
                return row | {"error": f"judge: {exc}"}
        self.done += 1
        if self.done % 10 == 0 or self.done == self.total:
            publish(
                ProgressUpdate(
                    self.stage, f"{self.done}/{self.total} answers", fraction=self.done / self.total
                )
            )
        return row | {
            "answer": answer,
            "latency_s": latency,
            "output_tokens": resp.usage.output_tokens if resp.usage else None,
            "exact_match": scored.exact_match,
            "token_f1": scored.token_f1,
            "rouge_l": scored.rouge_l,
            "checks_total": len(scored.checks),
            "checks_passed": scored.checks_passed,
            "failed_checks": scored.failed_checks or None,
            "score": scored.score,
            "judge_grade": grade,
        }


def progress_stage(sets: list[EvalSet]) -> str:
    """``smoke`` when only smoke checks are asked (no eval set), else ``evaluate``."""
    return "smoke" if sets and all(s.kind == "smoke" for s in sets) else "evaluate"


async def ask_models(
    client: AsyncMKA1Client, models: list[EvalModel], sets: list[EvalSet], options: EvalOptions
) -> tuple[list[dict[str, Any]], int]:
    """Rows for every (model, set, case), one model at a time; returns the rows and the calls made."""
    total = len(models) * sum(len(s.cases) for s in sets)
    asker = _Asker(client, options, total, progress_stage(sets))
    rows: list[dict[str, Any]] = []
    # Similar prompt lengths go out together, so a server that batches them pads less; rows keep set order.
    order = sorted(
        ((s.kind, i, case) for s in sets for i, case in enumerate(s.cases)),
        key=lambda item: sum(len(m.content) for m in item[2].input_messages()),
    )
    position = {
        (kind, i): n
        for n, (kind, i, _) in enumerate((s.kind, i, c) for s in sets for i, c in enumerate(s.cases))
    }
    for m in models:
        failed: list[str] = []
        answers: dict[tuple[str, int], dict[str, Any]] = {}
        todo = order
        for round_no in range(ASK_ROUNDS):
            if round_no:
                await asyncio.sleep(client_retry.backoff_delay(round_no))
            unanswered: list[tuple[str, int]] = []
            answered = await asyncio.gather(
                *(asker.ask(m, kind, i, case, failed, unanswered) for kind, i, case in todo)
            )
            answers.update({(row["set"], row["case"]): row for row in answered})
            retry = set(unanswered)
            todo = [item for item in todo if (item[0], item[1]) in retry]
            if not todo or failed:
                break
        rows += sorted(answers.values(), key=lambda row: position[(row["set"], row["case"])])
    return rows, asker.calls


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="ftpipe-eval")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


async def _ask_with_client(
    settings: ClientSettings,
    transport: httpx.AsyncBaseTransport | None,
    models: list[EvalModel],
    sets: list[EvalSet],
    options: EvalOptions,
) -> tuple[list[dict[str, Any]], int]:
    async with AsyncMKA1Client(settings, transport=transport) as client:
        return await ask_models(client, models, sets, options)


@task(name="evaluate", **api_task_options())
def evaluate_task(
    settings: ClientSettings,
    models: list[EvalModel],
    sets: list[EvalSet],
    output_dir: Path,
    *,
    select_by: SelectBy,
    options: EvalOptions | None = None,
    transport: httpx.BaseTransport | None = None,
) -> EvalOutcome:
    """Ask, score, summarise and select; write ``eval.parquet``/``eval.csv`` and publish the artifacts."""
    opts = options or EvalOptions()
    if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
        raise TypeError(
            "the eval stage needs a transport that also serves async clients (e.g. MockTransport)"
        )
    log = runtime.run_logger()
    n_cases = sum(len(s.cases) for s in sets)
    log.info(
        "evaluating %d model(s) on %d prompt(s) (%s), %d in parallel",
        len(models),
        n_cases,
        ", ".join(f"{s.kind}: {s.source}" for s in sets),
        opts.concurrency,
    )
    publish(ProgressUpdate(progress_stage(sets), f"evaluating {len(models)} model(s) on {n_cases} prompt(s)"))
    started = time.monotonic()
    rows, calls = _run(_ask_with_client(settings, transport, models, sets, opts))
    duration = time.monotonic() - started
    frame = eval_frame(rows)
    summaries = summarize(frame, models)
    final = next(m.model for m in models if m.role == "fine-tuned")
    final_errors = frame[frame["model"] == final]["error"].dropna()
    if len(final_errors):
        raise EvaluationFailed(f"the fine-tuned model {final} could not be evaluated: {final_errors.iloc[0]}")
    for s in summaries:
        if s.errors:
            log.warning("%s (%s) failed %d eval call(s); it is not selectable", s.model, s.role, s.errors)
    selection = select_best(summaries, select_by)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"eval_parquet": out / "eval.parquet", "eval_csv": out / "eval.csv"}
    frame.to_parquet(files["eval_parquet"], index=False)
    frame.to_csv(files["eval_csv"], index=False)
    log.info(
        "eval took %.1fs (%d calls): %s; selected %s (%s)",
        duration,
        calls,
        score_line(summaries),
        selection.model,
        selection.reason,
    )
    runtime.table(
        summary_rows(summaries, selected=selection.model),
        key=runtime.artifact_key("eval-summary"),
        description=f"per-model eval summary ({n_cases} prompt(s), {duration:.1f}s)",
    )
    base = next((s.model for s in summaries if s.role == "base"), None)
    if len(frame[frame["set"] == "eval"]):
        runtime.markdown(
            side_by_side_markdown(frame, base, selection.model, n=opts.side_by_side),
            key=runtime.artifact_key("eval-side-by-side"),
            description="base vs selected model vs reference",
        )
    return EvalOutcome(
        frame=frame, summaries=summaries, selection=selection, files=files, duration_s=duration, calls=calls
    )
