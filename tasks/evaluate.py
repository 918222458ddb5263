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
from collections.abc import Collection, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled, State

from client import ClientSettings
from client import retry as client_retry
from client.async_client import AsyncMKA1Client
from client.errors import APIError
from client.models import InputMessage, ResponseCreateRequest
from client.retry import is_transient
from evaluation.evalset import EvalCase, EvalSet
from evaluation.judge import judge_prompt, parse_grade
from evaluation.report import score_line, side_by_side_markdown, summary_rows
from evaluation.results import EvalModel, ModelSummary
from evaluation.scoring import score_answer
from evaluation.selection import SelectBy, Selection, select_best
from tasks import runtime
from tasks.errors import EvaluationFailed
from tasks.eval_cache import AnswerCache, CachedAnswer, request_key
from tasks.progress import ProgressUpdate, publish
from tasks.retry_policy import API_RETRIES, api_task_options

if TYPE_CHECKING:  # pandas loads with the frame, not with the flow (``ftpipe run``'s start does not pay it)
    import pandas as pd

T = TypeVar("T")

JUDGE_MAX_OUTPUT_TOKENS = 16
# Eval calls in flight when the run sets none: a remote API's rate limits allow this many. The embedded backend
# answers a whole batch of greedy requests (backend.generation.GenerationService.MAX_BATCH) in one pass and
# takes the requests queued beyond it as the next batch at once, so it is asked two batches' worth: the second
# waits at the server instead of being sent as the first one's answers come back (105 prompts: 0.2-0.3 s less
# between the 64 and the 41). One batch of 105 was slower on 2 CPU cores (2.4 s against 1.8-2.0 s for 64 + 41:
# every row pays the longest prompt's width), and MAX_BATCH bounds a big local model's memory.
REMOTE_EVAL_CONCURRENCY = 16
# Rounds of asking a model the prompts still unanswered after the client's in-place retries: the budget the
# stage's task retries had, without re-asking what was already answered.
ASK_ROUNDS = API_RETRIES + 1


@dataclass(frozen=True)
class EvalOptions:
    """How the stage asks: output cap, parallel calls, optional judge model, rows in the side-by-side."""

    max_output_tokens: int = 96
    concurrency: int | None = None  # None: as the server suits (`for_server`)
    judge_model: str | None = None
    side_by_side: int = 5

    @property
    def in_flight(self) -> int:
        """Calls in flight: the concurrency set, else a remote API's default."""
        return self.concurrency or REMOTE_EVAL_CONCURRENCY

    def for_server(self, *, embedded: bool) -> EvalOptions:
        """These options with an unset concurrency resolved: two full batches of the embedded backend, else
        the remote default; a concurrency that was set stays."""
        if self.concurrency is not None:
            return self
        from backend.generation import GenerationService

        return replace(
            self, concurrency=2 * GenerationService.MAX_BATCH if embedded else REMOTE_EVAL_CONCURRENCY
        )


@dataclass(frozen=True)
class EvalOutcome:
    """The eval frame, per-model summaries (in ``models`` order), the selection and the files written."""

    frame: pd.DataFrame
    summaries: list[ModelSummary]
    selection: Selection
    files: dict[str, Path] = field(default_factory=dict)
    duration_s: float = 0.0
    calls: int = 0
    cached: int = 0


@dataclass(frozen=True)
class ModelAnswers:
    """One model's rows (every set's cases, in set order), the calls made and the answers taken from the cache."""

    rows: list[dict[str, Any]]
    calls: int
    cached: int
    duration_s: float


class EvalProgress:
    """The eval stage's answer count on the progress bus; silent until ``start`` (eval work done while the
    job trains must not pull the live display away from training), then counting the answers of the models it
    was started with, those given before included (they may all have come while the job trained)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._lock = threading.Lock()
        self._given: dict[str, int] = {}  # answers received per model id, from the first one
        self._models: frozenset[str] = frozenset()
        self._total = 0

    def start(self, models: Collection[str], per_model: int) -> None:
        """Publish from now on, counting towards every answer of ``models`` (``per_model`` each); the count so
        far at once, so a stage whose answers all came earlier shows finished."""
        with self._lock:
            self._models = frozenset(models)
            self._total = len(self._models) * max(0, per_model)
            self._publish()

    def advance(self, model: str) -> None:
        """One more answer of ``model`` (published every 10 answers and at the last)."""
        with self._lock:
            self._given[model] = self._given.get(model, 0) + 1
            done = self._done()
            if model in self._models and (done % 10 == 0 or done == self._total):
                self._publish()

    def _done(self) -> int:
        return min(self._total, sum(self._given.get(m, 0) for m in self._models))

    def _publish(self) -> None:
        # Under the lock: the answer thread and the flow thread (``start``) publish in the order they counted,
        # so a lower count never lands after a higher one.
        done, total = self._done(), self._total
        if done:
            publish(ProgressUpdate(self.stage, f"{done}/{total} answers", fraction=done / total))


class EvalAbort:
    """Stops eval work from another thread: asks not yet started are skipped, calls in flight are cancelled."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._running: set[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = set()
        self.reason = ""

    @property
    def is_set(self) -> bool:
        """Whether the work was abandoned."""
        return self._event.is_set()

    def abort(self, reason: str) -> None:
        """Abandon the work: every coroutine running under ``guard`` is cancelled in its own loop."""
        with self._lock:
            self.reason = self.reason or reason
            self._event.set()
            running = list(self._running)
        for loop, coro_task in running:
            loop.call_soon_threadsafe(coro_task.cancel)

    async def guard(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` in a task that ``abort`` cancels (at once when already aborted)."""
        inner = asyncio.ensure_future(coro)
        entry = (asyncio.get_running_loop(), inner)
        with self._lock:
            self._running.add(entry)
            if self._event.is_set():
                inner.cancel()
        try:
            return await inner
        finally:
            with self._lock:
                self._running.discard(entry)


def _request(model: str, case: EvalCase, max_output_tokens: int) -> ResponseCreateRequest:
    return ResponseCreateRequest(
        model=model,
        input=[InputMessage(role=m.role, content=m.content) for m in case.input_messages()],
        max_output_tokens=max_output_tokens,
        temperature=0,
        store=False,
    )


# Response statuses whose text is the model's whole greedy answer (incomplete: it hit the output cap).
_FINAL_STATUSES = frozenset({"completed", "incomplete"})


class _Asker:
    """Asks one eval set's prompts of the models and turns each answer into a frame row."""

    def __init__(
        self,
        client: AsyncMKA1Client,
        options: EvalOptions,
        progress: EvalProgress | None,
        cache: AnswerCache | None,
    ) -> None:
        self.client = client
        self.options = options
        self.sem = asyncio.Semaphore(max(1, options.in_flight))
        self.progress = progress
        self.cache = cache
        self.calls = 0
        self.cached = 0
        # Per model id: answers known before asking (None: the model is never cached) and answers received.
        self.known: dict[str, dict[str, CachedAnswer] | None] = {}
        self.fresh: dict[str, dict[str, CachedAnswer]] = {}

    def _lookup(self, model: str, key: str) -> CachedAnswer | None:
        if self.cache is None:
            return None
        if model not in self.known:
            self.known[model] = self.cache.load(model)
        return (self.known[model] or {}).get(key)

    def _remember(self, model: str, key: str, answer: CachedAnswer) -> None:
        if self.cache is not None and self.known.get(model) is not None:
            self.fresh.setdefault(model, {})[key] = answer

    def save(self) -> None:
        """Write the answers received to the cache (one merge per model)."""
        if self.cache is not None:
            for model, answers in self.fresh.items():
                self.cache.store(model, answers)
        self.fresh = {}

    async def _create(self, request: ResponseCreateRequest) -> tuple[CachedAnswer, bool]:
        """The answer to ``request`` and whether it came from the cache."""
        key = request_key(request)
        hit = self._lookup(request.model, key)
        if hit is not None:
            return hit, True
        self.calls += 1
        started = time.perf_counter()
        resp = await self.client.responses.create(request)
        answer = CachedAnswer(
            text=resp.output_text,
            output_tokens=resp.usage.output_tokens if resp.usage else None,
            latency_s=time.perf_counter() - started,
        )
        if str(resp.status) in _FINAL_STATUSES:
            self._remember(request.model, key, answer)
        return answer, False

    async def _judge(self, case: EvalCase, answer: str) -> int | None:
        assert self.options.judge_model is not None
        request = ResponseCreateRequest(
            model=self.options.judge_model,
            input=judge_prompt(case, answer),
            max_output_tokens=JUDGE_MAX_OUTPUT_TOKENS,
            temperature=0,
            store=False,
        )
        return parse_grade((await self._create(request))[0].text)

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
            try:
                reply, cached = await self._create(_request(m.model, case, self.options.max_output_tokens))
            except APIError as exc:
                if is_transient(exc):
                    unanswered.append((kind, index))  # asked again next round
                else:
                    failed.append(str(exc))
                return row | {"error": str(exc)}
            answer = reply.text
            scored = score_answer(case, answer)
            try:
                grade = await self._judge(case, answer) if self.options.judge_model else None
            except APIError as exc:
                if not is_transient(exc):
                    raise
                unanswered.append((kind, index))
                return row | {"error": f"judge: {exc}"}
        self.cached += cached
        if self.progress is not None:
            self.progress.advance(m.model)
        return row | {
            "answer": answer,
            "cached": cached,
            "latency_s": reply.latency_s,
            "output_tokens": reply.output_tokens,
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
    client: AsyncMKA1Client,
    models: list[EvalModel],
    sets: list[EvalSet],
    options: EvalOptions,
    *,
    progress: EvalProgress | None = None,
    cache: AnswerCache | None = None,
) -> ModelAnswers:
    """Rows for every (model, set, case), one model at a time, with the calls made and cache hits."""
    started = time.monotonic()
    asker = _Asker(client, options, progress, cache)
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
    try:
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
    finally:
        # Whatever was answered is kept, also when the work is abandoned halfway (cancelled job, Ctrl-C).
        asker.save()
    return ModelAnswers(rows, asker.calls, asker.cached, time.monotonic() - started)


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
    progress: EvalProgress | None,
    cache: AnswerCache | None,
    abort: EvalAbort | None = None,
) -> ModelAnswers:
    # A connection per call in flight: httpx's default pool keeps 20, so the rest would reconnect each round.
    async with AsyncMKA1Client(settings, transport=transport, max_connections=options.in_flight) as client:
        work = ask_models(client, models, sets, options, progress=progress, cache=cache)
        return await (abort.guard(work) if abort is not None else work)


def _async_transport(transport: httpx.BaseTransport | None) -> httpx.AsyncBaseTransport | None:
    if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
        raise TypeError(
            "the eval stage needs a transport that also serves async clients (e.g. MockTransport)"
        )
    return transport


@task(
    name="evaluate-model", task_run_name="evaluate {model.model}", cache_policy=NO_CACHE, persist_result=False
)
def evaluate_model_task(
    settings: ClientSettings,
    model: EvalModel,
    sets: list[EvalSet],
    *,
    options: EvalOptions,
    transport: httpx.BaseTransport | None = None,
    cache: AnswerCache | None = None,
    progress: EvalProgress | None = None,
    abort: EvalAbort | None = None,
) -> ModelAnswers | State[Any]:
    """Ask one model every prompt; the run ends Cancelled (returning that state) when ``abort`` fires."""
    log = runtime.run_logger()
    try:
        answers = _run(
            _ask_with_client(
                settings, _async_transport(transport), [model], sets, options, progress, cache, abort
            )
        )
    except asyncio.CancelledError:
        if abort is None or not abort.is_set:
            raise
        log.info("eval of %s abandoned: %s", model.model, abort.reason)
        return Cancelled(message=f"eval of {model.model} abandoned: {abort.reason}")
    log.info(
        "%s (%s): %d answer(s) in %.1fs, %d call(s), %d from the cache",
        model.model,
        model.role,
        len(answers.rows),
        answers.duration_s,
        answers.calls,
        answers.cached,
    )
    return answers


def _as(m: EvalModel, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` labelled as ``m`` (answers asked of a model id that holds the same weights, or earlier)."""
    return [row | {"model": m.model, "role": m.role, "step": m.step} for row in rows]


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
    answered: Mapping[str, ModelAnswers] | None = None,
    cache: AnswerCache | None = None,
) -> EvalOutcome:
    """Score, summarise and select; write ``eval.parquet``/``eval.csv`` and publish the artifacts.

    ``answered``: rows already asked, by model id (``evaluate_model_task`` runs); models missing there are
    asked here.
    """
    opts = options or EvalOptions()
    answered = dict(answered or {})
    log = runtime.run_logger()
    n_cases = sum(len(s.cases) for s in sets)
    missing = [m for m in models if m.model not in answered]
    log.info(
        "evaluating %d model(s) on %d prompt(s) (%s), %d in parallel%s",
        len(models),
        n_cases,
        ", ".join(f"{s.kind}: {s.source}" for s in sets),
        opts.in_flight,
        f"; {len(models) - len(missing)} already answered" if len(missing) < len(models) else "",
    )
    started = time.monotonic()
    given = list(answered.values())
    if missing:
        stage = progress_stage(sets)
        publish(ProgressUpdate(stage, f"evaluating {len(missing)} model(s) on {n_cases} prompt(s)"))
        progress = EvalProgress(stage)
        progress.start([m.model for m in missing], n_cases)
        asked = _run(
            _ask_with_client(settings, _async_transport(transport), missing, sets, opts, progress, cache)
        )
        given.append(asked)
        for m in missing:
            answered[m.model] = ModelAnswers([r for r in asked.rows if r["model"] == m.model], 0, 0, 0.0)
    # Time spent asking (part of it may have overlapped the job's training), calls made, cache hits.
    duration = sum(a.duration_s for a in given)
    calls = sum(a.calls for a in given)
    cached = sum(a.cached for a in given)
    from evaluation.frame import eval_frame, summarize

    frame = eval_frame([row for m in models for row in _as(m, answered[m.model].rows)])
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
        "eval took %.1fs (%d calls, %d answers from the cache, %.1fs after the last model was known): %s; "
        "selected %s (%s)",
        duration,
        calls,
        cached,
        time.monotonic() - started,
        score_line(summaries),
        selection.model,
        selection.reason,
    )
    runtime.table(
        summary_rows(summaries, selected=selection.model),
        key=runtime.artifact_key("eval-summary"),
        description=f"per-model eval summary ({n_cases} prompt(s), {duration:.1f}s, {cached} cached answer(s))",
    )
    base = next((s.model for s in summaries if s.role == "base"), None)
    if len(frame[frame["set"] == "eval"]):
        runtime.markdown(
            side_by_side_markdown(frame, base, selection.model, n=opts.side_by_side),
            key=runtime.artifact_key("eval-side-by-side"),
            description="base vs selected model vs reference",
        )
    return EvalOutcome(
        frame=frame,
        summaries=summaries,
        selection=selection,
        files=files,
        duration_s=duration,
        calls=calls,
        cached=cached,
    )
