"""Eval work done while the job trains: the base model as soon as the job exists, checkpoints when the wait sees
them saved (which ones: ``eval_ahead``), so after training only what is left is asked.

One worker thread asks the models one at a time, in the order they became known, each as an
``evaluate-model`` task run of the flow (it runs in a copy of the flow's context, as Prefect's own thread pool
does). It keeps the run's eval concurrency while the job trains too: a server that batches a model's greedy
requests (the embedded one, ``backend/generation.py``) answers a batch at once for little more than the cost
of one, so fewer in flight would cost the CPU the training shares more per answer, not less. ``plan`` (its
options) is resolved for the server here: judge with ``EvalAhead.plan``. When the run ends without
judging (the job failed or was cancelled, Ctrl-C), ``close`` cancels the calls in flight, the running task run
ends Cancelled and the thread is joined before the connection closes.
"""

from __future__ import annotations

import contextvars
import math
import os
import queue
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import httpx

from backend.trainer.threads import OtherLoad, process_cpu_seconds, trainer_threads, usable_cores
from client import ClientSettings, MKA1Client
from client.models import FineTuningJob, FineTuningJobEvent
from evaluation.results import EvalModel
from tasks import runtime
from tasks.eval_cache import AnswerCache
from tasks.evaluate import (
    EvalAbort,
    EvalProgress,
    ModelAnswers,
    evaluate_model_task,
    progress_stage,
)
from tasks.progress import ProgressUpdate, publish

if TYPE_CHECKING:
    from flows.judging import JudgePlan

# How long ``close`` waits for a cancelled worker (its calls are cancelled at once; this bounds a stuck one).
CLOSE_TIMEOUT_S = 10.0

EventObserver = Callable[[FineTuningJob, list[FineTuningJobEvent]], None]


def _mentions_checkpoint(event: FineTuningJobEvent) -> bool:
    # The embedded backend says "Checkpoint saved at step N", OpenAI "Checkpoint created at step N".
    return "checkpoint" in (event.message or "").lower()


class EvalAhead:
    """Eval work queued as models become known and asked by one worker thread; ``finish`` collects it."""

    def __init__(
        self,
        plan: JudgePlan,
        settings: ClientSettings,
        transport: httpx.BaseTransport | None,
        cache: AnswerCache | None,
        *,
        base_early: bool,
        checkpoints: Literal["all", "last", "none"],
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.transport = transport
        self.cache = cache
        self.base_early = base_early
        self.checkpoints = checkpoints
        self._total_steps: int | None = None
        self._checkpoint_queued = False
        self.progress = EvalProgress(progress_stage(plan.sets))
        self._abort = EvalAbort()
        self._queue: queue.Queue[EvalModel | None] = queue.Queue()
        self._queued: dict[str, EvalModel] = {}
        self._answers: dict[str, ModelAnswers] = {}
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def started(self) -> bool:
        """Whether a worker was started (there is eval work to do)."""
        return self._thread is not None

    def start(self, base_model: str) -> None:
        """Start the worker and queue the base model (when an eval set is asked: smoke-only runs skip it)."""
        if self._thread is not None or not self.plan.sets:
            return
        context = contextvars.copy_context()
        # Daemon only as a last resort: ``close`` joins it; a thread stuck past that must not hold the exit.
        self._thread = threading.Thread(
            target=context.run, args=(self._work,), name="ftpipe-eval-ahead", daemon=True
        )
        self._thread.start()
        if self.base_early and self.plan.eval_set is not None:
            self.submit(EvalModel(base_model, "base"))

    def submit(self, model: EvalModel) -> None:
        """Queue ``model`` unless it is already queued (answers are per model id)."""
        if self._thread is None or self._closed or model.model in self._queued:
            return
        self._queued[model.model] = model
        self._queue.put(model)

    def observer(self, client: MKA1Client, then: EventObserver | None = None) -> EventObserver:
        """A ``wait_for_job_task`` event observer queueing each checkpoint the job saves (then ``then``)."""

        def observe(job: FineTuningJob, events: list[FineTuningJobEvent]) -> None:
            try:
                if then is not None:
                    then(job, events)
            finally:
                for e in events:
                    total = (e.data or {}).get("total_steps")
                    if isinstance(total, int) and not isinstance(total, bool) and total > 0:
                        self._total_steps = total
                if self.checkpoints != "none" and any(_mentions_checkpoint(e) for e in events):
                    self._queue_checkpoints(client, job.id)

        return observe

    def _queue_checkpoints(self, client: MKA1Client, job_id: str) -> None:
        if self._thread is None or self._closed:
            return
        try:
            checkpoints = sorted(client.jobs.list_checkpoints(job_id), key=lambda c: c.step_number or 0)
        except Exception:
            # A missed listing only moves that checkpoint's eval to after training.
            runtime.run_logger().debug("could not list the checkpoints of %s", job_id, exc_info=True)
            return
        for ck in checkpoints:
            if ck.fine_tuned_model_checkpoint:
                step = ck.step_number if ck.step_number is not None else ck.metrics.step
                step = int(step) if step is not None else None
                if self.checkpoints == "last" and (step is None or step != self._total_steps):
                    continue
                loss = ck.metrics.full_valid_loss
                self.submit(EvalModel(ck.fine_tuned_model_checkpoint, "checkpoint", step, loss))
                self._checkpoint_queued = True

    def job_succeeded(self, job: FineTuningJob) -> None:
        """Queue the fine-tuned model the moment its job succeeded (it serves from then), so that its answers
        come while the metrics are collected. Not when checkpoints were queued: the last of them holds the same
        weights, and ``flows.judging.collect_answers`` takes its answers for the model's."""
        if job.fine_tuned_model and not self._checkpoint_queued:
            self.submit(EvalModel(job.fine_tuned_model, "fine-tuned"))

    def _work(self) -> None:
        while (model := self._queue.get()) is not None:
            if self._abort.is_set:
                continue  # drain to the sentinel without asking
            try:
                result: Any = evaluate_model_task(
                    self.settings,
                    model,
                    runtime.quoted(self.plan.sets),
                    options=self.plan.options,
                    transport=self.transport,
                    cache=self.cache,
                    progress=self.progress,
                    abort=self._abort,
                )
            except BaseException as exc:  # handed to the flow thread by ``finish``
                self._error = self._error or exc
                self._abort.abort(f"{type(exc).__name__} while evaluating {model.model}")
                continue
            if isinstance(result, ModelAnswers):
                self._answers[model.model] = result

    def finish(self, models: list[EvalModel]) -> dict[str, ModelAnswers]:
        """Queue what is still unasked of ``models``, wait for the worker and return every answer by model id.

        Progress is published from here on: the answers of ``models``, those given while the job trained
        counted, so the stage ends finished even when nothing was left to ask.
        """
        if self._thread is None:
            return {}
        left = [m for m in models if m.model not in self._answers]
        n_cases = sum(len(s.cases) for s in self.plan.sets)
        if left:
            stage = self.progress.stage
            publish(ProgressUpdate(stage, f"evaluating {len(left)} model(s) on {n_cases} prompt(s)"))
        self.progress.start([m.model for m in models], n_cases)
        for m in models:
            self.submit(m)
        self._stop()
        if self._error is not None:
            raise self._error
        return dict(self._answers)

    def close(self, reason: str) -> None:
        """Abandon the work left (calls in flight are cancelled) and join the worker; idempotent."""
        if self._thread is None:
            return
        self._abort.abort(reason)
        self._stop(CLOSE_TIMEOUT_S)

    def is_queued(self, model: str) -> bool:
        """Whether ``model`` was queued (so ``finish`` returns its answers unless its eval failed)."""
        return model in self._queued

    def _stop(self, timeout_s: float | None = None) -> None:
        assert self._thread is not None
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        # Joined in slices so a Ctrl-C in the flow thread is not held up by the wait.
        waited = 0.0
        while self._thread.is_alive() and (timeout_s is None or waited < timeout_s):
            self._thread.join(0.2)
            waited += 0.2


# "auto": what does not compete with training for the machine; "all": every model as soon as it serves (an
# embedded backend with cores or a GPU to spare); "off": everything after training.
OVERLAP_SETTING = "FTPIPE_EVAL_DURING_TRAINING"
OVERLAP_MODES = ("auto", "all", "off")


class LoadProbe:
    """Cores that other processes keep busy, measured from the probe's start (the flow's) to ``read`` (the eval
    decision): what the machine does now, where the 1-minute load average still holds a run that just ended.

    ``serving``: pids of local servers that serve this run (ftpipe's Prefect server), not counted: in that span
    they create its flow and task runs and take its logs (0.2-0.5 of a core on 2 busy cores, which pushed the
    first job after the services started just past the threshold), work that ends as training starts.
    """

    def __init__(self, serving: Collection[int] = ()) -> None:
        self._serving = {pid: 0.0 for pid in serving}
        # One span, from the start to the read: any length measures.
        self._load = OtherLoad(stale_s=math.inf, also_own=self._serving_cpu if self._serving else None)
        self._sample()

    def _serving_cpu(self) -> float:
        for pid in self._serving:
            seconds = process_cpu_seconds(pid)
            if seconds is not None:  # a server gone since keeps its last figure: the span's difference holds
                self._serving[pid] = seconds
        return sum(self._serving.values())

    def read(self) -> float | None:
        """Cores busy in other processes since the start (this one's CPU time left out); None when unknown:
        no /proc/stat, or too short a span for the clock ticks to say."""
        return self._sample()

    def _sample(self) -> float | None:
        try:
            return self._load.sample(0.0)
        except Exception:  # an unusual /proc/stat (gVisor, odd kernels): unknown, never a failed run
            return None


def machine_has_room(
    others: float | None = None, *, load: float | None = None, cores: int | None = None
) -> bool:
    """Whether the cores the embedded trainer's share and other processes leave free hold one for eval.

    ``others``: cores other processes kept busy lately (``LoadProbe``); where unknown, the 1-minute load
    average (``load``, read when not given), which also counts this run and lags by a minute.
    """
    cores = usable_cores() if cores is None else cores
    free = cores - trainer_threads(cores)
    if others is not None:
        # One core for the eval, with half a core of slack for the local servers' bookkeeping (the Prefect
        # server answering this flow's start counts among the others: 0.2 of a core, measured).
        return cores >= 2 and others <= free - 0.5
    try:
        load = os.getloadavg()[0] if load is None else load
    except OSError:  # no load average on this platform: assume a busy machine, as before
        return False
    # The trainer's share plus half a core of slack for this run's own client and the server's bookkeeping.
    return cores >= 2 and load < free + 0.5


def _load_text(others: float | None) -> str:
    cores = usable_cores()
    if others is not None:
        return f"other processes kept {others:.2f} of {cores} cores busy"
    try:
        return f"1-minute load {os.getloadavg()[0]:.2f} on {cores} cores"
    except OSError:
        return f"no load figure on this platform, {cores} cores"


@contextmanager
def eval_ahead(
    plan: JudgePlan,
    settings: ClientSettings,
    transport: httpx.BaseTransport | None,
    cache: AnswerCache | None,
    *,
    embedded: bool,
    others: float | None = None,
) -> Iterator[EvalAhead]:
    """An ``EvalAhead`` whose work left when the block ends (the run failed before judging) is abandoned.

    What is asked while the job trains (``FTPIPE_EVAL_DURING_TRAINING``, default ``auto``):
    - a remote API trains elsewhere, so its base model is asked at once; its checkpoints wait for the job to
      succeed: neither the wire contract nor MKA1's SDK promise that a checkpoint serves before (OpenAI's
      do not);
    - the embedded backend answers on the machine that trains. Its trainer takes half the cores
      (``backend.trainer.threads.trainer_threads``), so on an otherwise idle machine the other half is free:
      judged beside training, the sample job took 56 s and 67 s against 86 s and 81 s judged after it
      (2 cores, idle, eval 33-47 s of answers). On a busy machine the same overlap competes with the
      training (2 cores at load 8-13: 498 s in all against 299 s). So ``auto`` asks the base model and every
      checkpoint as each serves when the cores other processes keep busy (``others``, a ``LoadProbe`` read
      since the flow started; else the 1-minute load average) leave a core beside the trainer's share
      (``machine_has_room``), else only the checkpoint of the last step (it holds the fine-tuned weights, and
      training is over when it is saved); ``all`` always asks everything early (a checkpoint's model id
      serves from the moment it is listed, ``backend/worker.py``).
    """
    mode = os.environ.get(OVERLAP_SETTING, "auto").strip().lower() or "auto"
    if mode not in OVERLAP_MODES:  # a tuning knob: a typo costs a warning, never the run
        runtime.run_logger().warning(
            "%s=%r is not one of %s; using auto", OVERLAP_SETTING, mode, ", ".join(OVERLAP_MODES)
        )
        mode = "auto"
    checkpoints: Literal["all", "last", "none"]
    if mode == "off":
        base_early, checkpoints = False, "none"
    elif not embedded:
        base_early, checkpoints = True, "none"
    else:
        early = mode == "all" or machine_has_room(others)
        base_early, checkpoints = (True, "all") if early else (False, "last")
        runtime.run_logger().info(
            "eval during training (%s=%s): %s (%s)",
            OVERLAP_SETTING,
            mode,
            "the base model and each checkpoint as it is saved"
            if early
            else "only the last checkpoint (this machine is busy; the rest after training)",
            _load_text(others),
        )
    # The eval concurrency the run left unset becomes the server's (a full batch on the embedded backend).
    plan = plan.for_server(embedded=embedded)
    ahead = EvalAhead(plan, settings, transport, cache, base_early=base_early, checkpoints=checkpoints)
    try:
        yield ahead
    except BaseException as exc:
        ahead.close(f"the run stopped ({type(exc).__name__})")
        raise
    finally:
        ahead.close("the run ended")
