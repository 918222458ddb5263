"""Eval work overlapped with training (flows/eval_ahead.py) against the MockTransport fake: what is asked while
the job trains, what is left for after it, and that a failed job leaves no eval work behind."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from backend.trainer import threads
from flows import eval_ahead as eval_ahead_module
from flows.backend_runtime import Connection, use_connection
from flows.eval_ahead import OVERLAP_SETTING, LoadProbe, machine_has_room
from flows.fine_tune import fine_tune
from flows.params import FineTuneParams
from tasks.progress import ProgressUpdate, subscribe
from tasks.record import RunRecord
from tests.pipeline.fake_api import SERVER_ID, FakeMKA1
from tests.pipeline.flow_params import micro_chat_params

pytestmark = pytest.mark.usefixtures("prefect_harness")
PROMPTS = 10 + 1  # the dataset's validation-derived eval cases + its smoke prompt


@dataclass
class TrainingFake(FakeMKA1):
    """FakeMKA1 whose checkpoints come with the embedded backend's "Checkpoint saved" event, whose job stays
    running until ``hold`` allows its end, and whose /responses calls can hang until cancelled."""

    hold: Callable[[TrainingFake], bool] | None = None
    block: bool = False
    asked: list[tuple[str, str]] = field(default_factory=list)  # (model, the job's status at that moment)
    in_flight: int = 0
    cancelled: int = 0

    def _advance(self, jid: str) -> None:
        cursor = self._cursor[jid]
        upcoming = self.timeline[cursor] if cursor < len(self.timeline) else None
        if upcoming in ("succeeded", "failed") and self.hold is not None and not self.hold(self):
            return
        before = len(self.checkpoints.get(jid, []))
        super()._advance(jid)
        for ck in self.checkpoints.get(jid, [])[before:]:
            step = ck["step_number"]
            self._event(jid, f"Checkpoint saved at step {step} (epoch {step}/2)", data={"step": step})

    def asked_of(self, model: str) -> int:
        return sum(1 for m, _ in self.asked if m == model)

    def connection(self, embedded: bool = True) -> Connection:  # type: ignore[override]
        return Connection(self.settings(), SERVER_ID, embedded, _Transport(self))


class _Transport(httpx.MockTransport):
    """The fake for the sync client; for the eval's async client, /responses calls are recorded (and held)."""

    def __init__(self, fake: TrainingFake) -> None:
        super().__init__(fake.handle)
        self.fake = fake

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        fake = self.fake
        if request.url.path.endswith("/responses"):
            import json

            job = list(fake.jobs.values())[-1]
            fake.asked.append((json.loads(request.content)["model"], job["status"]))
            fake.in_flight += 1
            try:
                while fake.block:
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                fake.cancelled += 1
                raise
            finally:
                fake.in_flight -= 1
        return fake.handle(request)


def _params(dataset_dir: Path, tmp_path: Path, **kw: Any) -> FineTuneParams:
    return micro_chat_params(dataset_dir, tmp_path, **{"wait_timeout_s": 30, **kw})


def _run(
    fake: TrainingFake, dataset_dir: Path, tmp_path: Path, embedded: bool = True, **kw: Any
) -> RunRecord:
    with use_connection(fake.connection(embedded)):
        return fine_tune(**_params(dataset_dir, tmp_path, **kw).flow_arguments())


def _base_and_checkpoints_answered(fake: TrainingFake) -> bool:
    jid = list(fake.jobs)[-1]
    models = ["local:micro-chat", f"ft:{jid}:ckpt-1", f"ft:{jid}:ckpt-2"]
    return fake.in_flight == 0 and all(fake.asked_of(m) >= PROMPTS for m in models)


def _held_until_answered() -> TrainingFake:
    """A two-step job that cannot succeed before the base model and both checkpoints were answered."""
    fake = TrainingFake(timeline=["queued", "running", "running", "succeeded"], total_steps=2)
    fake.hold = _base_and_checkpoints_answered
    return fake


def test_base_and_checkpoints_are_judged_while_the_job_trains(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OVERLAP_SETTING, "all")
    # The job cannot end before the base model and both checkpoints were answered: only an eval running
    # while the wait polls lets this run finish.
    fake = _held_until_answered()
    result = _run(fake, dataset_dir, tmp_path, seed=1)
    ev = result.evaluation
    assert ev is not None
    assert [(m.role, m.step, m.answers) for m in ev.models] == [
        ("base", None, 10),
        ("checkpoint", 1, 10),
        ("fine-tuned", 2, 10),
    ]
    # The checkpoint at the last step holds the fine-tuned weights: its answers stand for the final model's,
    # which is never asked; nothing at all is asked after training.
    assert fake.asked_of(str(result.fine_tuned_model)) == 0
    assert all(status != "succeeded" for _, status in fake.asked)
    assert ev.calls == 3 * PROMPTS and ev.cached_answers == 0
    assert {m.role: m.score for m in ev.models} == {"base": 0.0, "checkpoint": 1.0, "fine-tuned": 1.0}

    # A re-run re-attaches to the finished job and takes every answer from the cache.
    again = _run(fake, dataset_dir, tmp_path, seed=1)
    assert again.job_attached and again.evaluation is not None
    # The base model is asked again: on this (not embedded) server its id may be an alias.
    assert again.evaluation.calls == PROMPTS and again.evaluation.cached_answers == 2 * PROMPTS
    assert [m.model_dump(exclude={"latency_mean_s", "latency_p95_s"}) for m in again.evaluation.models] == [
        m.model_dump(exclude={"latency_mean_s", "latency_p95_s"}) for m in ev.models
    ]


def test_a_remote_api_gets_its_checkpoints_asked_after_training_with_the_same_report(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OVERLAP_SETTING, "all")
    ahead = TrainingFake(timeline=["queued", "running", "running", "succeeded"], total_steps=2)
    ahead.hold = _base_and_checkpoints_answered
    overlapped = _run(ahead, dataset_dir, tmp_path / "a", seed=2)
    remote = TrainingFake(timeline=["queued", "running", "running", "succeeded"], total_steps=2)
    sequential = _run(remote, dataset_dir, tmp_path / "b", embedded=False, seed=2)
    jid = list(remote.jobs)[-1]
    # Not promised servable before the job ends: no checkpoint of a remote job is asked while it trains.
    assert {status for model, status in remote.asked if "ckpt" in model} == {"succeeded"}
    assert (
        remote.asked_of(f"ft:{jid}:ckpt-2") == 0
        and remote.asked_of(str(sequential.fine_tuned_model)) == PROMPTS
    )

    def scores(record: RunRecord) -> list[tuple[Any, ...]]:
        assert record.evaluation is not None
        return [(m.role, m.step, m.score, m.answers, m.smoke_passed) for m in record.evaluation.models]

    assert scores(overlapped) == scores(sequential)
    assert overlapped.evaluation is not None and sequential.evaluation is not None
    assert overlapped.evaluation.selected is not None and sequential.evaluation.selected is not None
    assert overlapped.evaluation.selected.step == sequential.evaluation.selected.step
    assert overlapped.evaluation.gate_passed is sequential.evaluation.gate_passed is True


def test_the_fine_tuned_model_is_asked_while_the_metrics_are_collected(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A remote API: no checkpoint is asked while the job trains, but the fine-tuned model serves from the moment
    # the job succeeded. The metrics stage here waits (10 s at most) for its answers: they come beside it.
    import tasks.metrics as metrics

    real = metrics.collect_metrics_task
    answered_during: list[bool] = []

    def collect(client: Any, job_id: str, output_dir: Path) -> Any:
        model = str(client.jobs.retrieve(job_id).fine_tuned_model)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not (fake.asked_of(model) >= PROMPTS and fake.in_flight == 0):
            time.sleep(0.02)
        answered_during.append(fake.asked_of(model) >= PROMPTS)
        return real(client, job_id, output_dir)

    monkeypatch.setattr(metrics, "collect_metrics_task", collect)
    fake = TrainingFake(timeline=["queued", "running", "running", "succeeded"], total_steps=2)
    result = _run(fake, dataset_dir, tmp_path, embedded=False, seed=7)
    assert answered_during == [True]
    assert result.evaluation is not None and fake.asked_of(str(result.fine_tuned_model)) == PROMPTS  # once
    assert [(m.role, m.step, m.answers) for m in result.evaluation.models] == [
        ("base", None, 10),
        ("checkpoint", 1, 10),
        ("fine-tuned", 2, 10),
    ]


async def _task_run_states(flow_run_id: Any) -> list[tuple[str, str]]:
    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sorted((r.name, r.state.type.value if r.state else "?") for r in runs)


def test_a_failed_job_cancels_the_eval_in_flight(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OVERLAP_SETTING, "all")
    fake = TrainingFake(timeline=["queued", "running", "running", "failed"], total_steps=2, block=True)
    fake.hold = lambda f: f.in_flight > 0  # fail while the base model's calls hang in flight
    started = time.monotonic()
    with use_connection(fake.connection()):
        state = fine_tune(**_params(dataset_dir, tmp_path, seed=3).flow_arguments(), return_state=True)
    assert state.is_failed() and "boom" in str(state.message)
    assert time.monotonic() - started < 20
    assert fake.cancelled > 0 and fake.in_flight == 0
    assert not [t for t in threading.enumerate() if t.name == "ftpipe-eval-ahead"]
    states = asyncio.run(_task_run_states(state.state_details.flow_run_id))
    evals = [s for name, s in states if name.startswith("evaluate ")]
    assert evals and set(evals) == {"CANCELLED"}
    assert not [name for name, s in states if s in ("RUNNING", "PENDING", "SCHEDULED")]


def test_by_default_the_embedded_backend_gets_only_the_last_checkpoint_judged_while_it_trains(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a busy machine that trains, the base model and the earlier checkpoints would compete with the
    # training: they wait for the job's end. The last-step checkpoint (training is over when it is saved) does not.
    monkeypatch.delenv(OVERLAP_SETTING, raising=False)
    # Other processes keep 3 of 4 cores busy (the trainer takes 2): busy, whatever the load average says.
    _machine(monkeypatch, cores=4, others=3.0, loadavg=0.0)
    fake = TrainingFake(timeline=["queued", "running", "running", "succeeded"], total_steps=2)
    fake.hold = lambda f: f.in_flight == 0 and f.asked_of(f"ft:{list(f.jobs)[-1]}:ckpt-2") >= PROMPTS
    result = _run(fake, dataset_dir, tmp_path, seed=4)
    jid = list(fake.jobs)[-1]
    assert {s for m, s in fake.asked if m == f"ft:{jid}:ckpt-2"} == {"running"}
    assert {s for m, s in fake.asked if m in ("local:micro-chat", f"ft:{jid}:ckpt-1")} == {"succeeded"}
    assert fake.asked_of(str(result.fine_tuned_model)) == 0
    assert result.evaluation is not None
    assert [(m.role, m.step) for m in result.evaluation.models] == [
        ("base", None),
        ("checkpoint", 1),
        ("fine-tuned", 2),
    ]
    monkeypatch.setenv(OVERLAP_SETTING, "off")
    off = TrainingFake(timeline=["queued", "running", "running", "succeeded"], total_steps=2)
    _run(off, dataset_dir, tmp_path / "off", seed=5)
    assert {s for _, s in off.asked} == {"succeeded"}


def test_auto_judges_everything_during_training_when_the_machine_has_room(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The embedded trainer takes half the cores; with the other half idle, auto behaves as "all". The load
    # average still holds the run that ended a moment ago (9 on 4 cores); what the probe measured decides.
    monkeypatch.delenv(OVERLAP_SETTING, raising=False)
    _machine(monkeypatch, cores=4, others=0.2, loadavg=9.0)
    fake = _held_until_answered()
    result = _run(fake, dataset_dir, tmp_path, seed=6)
    assert all(status != "succeeded" for _, status in fake.asked)
    assert result.evaluation is not None and result.evaluation.calls == 3 * PROMPTS


def _machine(monkeypatch: pytest.MonkeyPatch, *, cores: int, others: float | None, loadavg: float) -> None:
    """The flow sees ``cores`` usable cores, its ``LoadProbe`` reads ``others`` and the load average ``loadavg``."""
    monkeypatch.setattr(eval_ahead_module, "usable_cores", lambda: cores)
    monkeypatch.setattr(LoadProbe, "read", lambda self: others)
    monkeypatch.setattr(eval_ahead_module.os, "getloadavg", lambda: (loadavg, loadavg, loadavg))


@pytest.mark.parametrize(
    ("others", "cores", "room"),
    [
        (0.0, 2, True),  # idle 2-core machine: one core for the trainer, one for the eval
        (0.25, 2, True),  # the local Prefect server answering this flow's start (0.2 measured)
        (0.6, 2, False),  # another busy process: the eval would take the trainer's core
        (1.0, 2, False),
        (0.0, 1, False),  # one core: the trainer's
        (7.0, 16, True),
        (7.8, 16, False),
    ],
)
def test_machine_has_room_leaves_the_trainer_its_half_of_the_cores_and_others_theirs(
    others: float, cores: int, room: bool
) -> None:
    assert machine_has_room(others, cores=cores) is room


def test_what_other_processes_keep_busy_now_decides_over_the_lagging_load_average() -> None:
    # Right after another run the 1-minute average still holds it (its processes are gone): measured idle wins.
    assert machine_has_room(0.1, load=2.4, cores=2) is True
    assert machine_has_room(1.2, load=0.0, cores=2) is False
    # Unmeasured (no /proc/stat, too short a span): the load average decides, as before.
    assert machine_has_room(None, load=1.0, cores=2) is True  # this run's own client, one core free
    assert machine_has_room(None, load=1.6, cores=2) is False
    assert machine_has_room(None, load=4.4, cores=16) is True
    assert machine_has_room(None, load=8.6, cores=16) is False


def test_machine_has_room_counts_the_trainer_threads_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # FTPIPE_TRAINER_THREADS=2 on 2 cores: the trainer takes both, so even an idle machine has no core to spare.
    monkeypatch.setenv("FTPIPE_TRAINER_THREADS", "2")
    assert machine_has_room(0.0, cores=2) is False
    assert machine_has_room(None, load=0.5, cores=2) is False
    monkeypatch.setenv("FTPIPE_TRAINER_THREADS", "1")
    assert machine_has_room(0.0, cores=2) is True


def test_the_load_probe_counts_other_processes_busy_time_since_the_flow_started_not_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The machine's busy CPU time (/proc/stat) is this process's own plus 0.1 s elsewhere: only those count.
    # The generation's 2 s staleness is made tiny, so this span (> 0.2 s) shows that the probe measures it whole.
    monkeypatch.setattr(threads.OtherLoad, "STALE_S", 0.01)
    own0 = time.process_time()
    elsewhere = {"s": 0.0}
    monkeypatch.setattr(
        threads, "busy_cpu_seconds", lambda cpus=None: 5000.0 + time.process_time() - own0 + elsewhere["s"]
    )
    started = time.monotonic()
    probe = LoadProbe()
    end = started + 0.25
    while time.monotonic() < end:  # this process keeps a core busy (the flow validating): not a load
        pass
    elsewhere["s"] = 0.1
    others = probe.read()
    span = time.monotonic() - started
    assert others is not None and 0.1 / span - 0.05 <= others <= 0.1 / 0.25 + 0.05


def test_the_load_probe_leaves_out_the_servers_serving_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # Over the span, ftpipe's Prefect server (pid 4242) spends 0.2 s creating this run's flow and task runs and
    # something else 0.02 s: only the latter is a load.
    monkeypatch.setattr(threads.OtherLoad, "STALE_S", 0.01)
    own0 = time.process_time()
    server = {"s": 3.0}
    elsewhere = {"s": 0.0}
    monkeypatch.setattr(
        threads,
        "busy_cpu_seconds",
        lambda cpus=None: 5000.0 + time.process_time() - own0 + server["s"] + elsewhere["s"],
    )
    monkeypatch.setattr(
        eval_ahead_module, "process_cpu_seconds", lambda pid: server["s"] if pid == 4242 else None
    )
    served, plain = LoadProbe(serving=[4242]), LoadProbe()
    time.sleep(0.2)
    server["s"] += 0.2
    elsewhere["s"] += 0.02
    assert (served.read() or 0.0) <= 0.15
    assert (plain.read() or 0.0) >= 0.8


def test_the_load_probe_is_unknown_without_proc_stat_or_when_it_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(threads, "busy_cpu_seconds", lambda cpus=None: None)
    probe = LoadProbe()
    time.sleep(0.15)
    assert probe.read() is None  # not Linux: the load average decides

    def unreadable(cpus: object = None) -> float:
        raise ValueError("invalid literal for int()")  # an unusual /proc/stat

    monkeypatch.setattr(threads, "busy_cpu_seconds", unreadable)
    assert LoadProbe().read() is None  # never a failed run


@pytest.mark.parametrize(
    ("embedded", "given", "in_flight"),
    [(True, None, 128), (False, None, 16), (True, 4, 4), (False, 32, 32)],
)
def test_an_unset_eval_concurrency_is_two_batches_on_the_embedded_backend_and_16_remote(
    dataset_dir: Path, tmp_path: Path, embedded: bool, given: int | None, in_flight: int
) -> None:
    from backend.generation import GenerationService
    from flows.fine_tune import _judge_plan

    plan = _judge_plan(_params(dataset_dir, tmp_path, eval_concurrency=given))
    assert plan.options.concurrency == given  # unresolved until the server is known
    fake = TrainingFake(timeline=["queued", "succeeded"])
    with eval_ahead_module.eval_ahead(plan, fake.settings(), None, None, embedded=embedded) as ahead:
        assert ahead.plan.options.in_flight == in_flight
        assert ahead.plan.sets == plan.sets
    # The parameter's description promises 128 in flight, answered in batches of 64.
    assert GenerationService.MAX_BATCH == 64


def test_the_live_region_ends_on_the_answers_at_100_percent_when_all_came_before_the_judging(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every model was answered while the job trained (and, re-attached, from the cache): the judging has nothing
    # left to ask, and the display must still end on the eval stage done, not on the metrics stage before it.
    from cli.progress_display import ProgressState

    monkeypatch.setenv(OVERLAP_SETTING, "all")
    fake = _held_until_answered()
    for attempt in ("trained", "re-attached"):
        state = ProgressState(started=time.monotonic())
        seen: list[tuple[str, float | None]] = []

        def show(update: ProgressUpdate, state: ProgressState = state, seen: list[Any] = seen) -> None:
            state.apply(update, time.monotonic())
            seen.append((update.stage, update.fraction))

        with subscribe(show):
            result = _run(fake, dataset_dir, tmp_path, seed=8)
        assert result.job_attached is (attempt == "re-attached")
        assert (state.label, state.fraction) == ("eval", 1.0), (attempt, seen)
        assert seen[-1] == ("evaluate", 1.0), (attempt, seen)
