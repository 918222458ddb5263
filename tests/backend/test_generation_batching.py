"""GenerationService: concurrent greedy requests for one model are answered in batches, in order, on the
cores that the training workers and other processes leave free, a second batch on a second lane when they allow."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.generation import GenerationRequest, GenerationService
from backend.trainer import threads
from backend.trainer.generate import BatchItem, GenerationResult
from backend.trainer.threads import (
    THREADS_ENV,
    OtherLoad,
    generation_lanes,
    generation_threads,
    usable_cores,
)


class StubGenerator:
    """Echoes the last message; records how requests were grouped."""

    def __init__(self, fail_model: str | None = None) -> None:
        self.batches: list[tuple[str, int]] = []
        self.singles: list[tuple[str, float | None]] = []
        self.fail_model = fail_model
        self.threads: set[str] = set()
        self.batch_threads: set[str] = set()
        self.torch_threads: list[int] = []  # what use_threads set, per call

    def use_threads(self, n: int) -> None:
        self.torch_threads.append(n)

    def _echo(self, model: str, messages: list[dict[str, Any]], max_tokens: int | None) -> GenerationResult:
        return GenerationResult(f"{model}:{messages[-1]['content']}", 1, max_tokens or 0)

    def generate(self, model_ref: Any, messages: Any, **kw: Any) -> GenerationResult:
        self.threads.add(threading.current_thread().name)
        if str(model_ref) == self.fail_model:
            raise FileNotFoundError("weights gone")
        time.sleep(0.02)
        self.singles.append((str(model_ref), kw.get("temperature")))
        return self._echo(str(model_ref), messages, kw.get("max_output_tokens"))

    def generate_greedy_batch(
        self, model_ref: Any, items: list[BatchItem], *, before_step: Any = None
    ) -> list[GenerationResult]:
        self.threads.add(threading.current_thread().name)
        self.batch_threads.add(threading.current_thread().name)
        if str(model_ref) == self.fail_model:
            raise FileNotFoundError("weights gone")
        time.sleep(0.02)
        self.batches.append((str(model_ref), len(items)))
        return [self._echo(str(model_ref), i.messages, i.max_output_tokens) for i in items]


def _req(model: str, text: str, temperature: float | None = None) -> GenerationRequest:
    return GenerationRequest(model, [{"role": "user", "content": text}], None, 7, temperature, None, None)


class FixedLoad(OtherLoad):
    """Other processes keep ``cores`` busy (None: not measured yet)."""

    def __init__(self, cores: float | None) -> None:
        super().__init__()
        self.cores = cores

    def sample(self, workers_cores: float) -> float | None:
        return self.cores


def _stubbed(
    training_workers: Callable[[], int] | None = None, *, lanes: int = 1, **timing: float
) -> tuple[GenerationService, StubGenerator]:
    """A service answering through a ``StubGenerator`` on ``lanes`` lanes (one: batches strictly in turn),
    with ``timing`` overriding its gather/return waits."""
    service = GenerationService(training_workers, max_lanes=lanes)
    stub = StubGenerator()
    service._generator = stub
    for name, value in timing.items():
        setattr(service, name, value)
    return service, stub


def _answer_one(service: GenerationService) -> None:
    try:
        asyncio.run(service.generate(_req("m", "q")))
    finally:
        service.close()


def test_concurrent_greedy_requests_are_batched_per_model() -> None:
    service, stub = _stubbed()  # one lane

    async def main() -> list[Any]:
        reqs = [_req("m1" if i % 3 else "m2", f"q{i}") for i in range(30)] + [_req("m1", "hot", 0.8)]
        return await asyncio.gather(*(service.generate(r) for r in reqs))

    try:
        outs = asyncio.run(main())
    finally:
        service.close()
    assert [o.text for o in outs[:30]] == [f"{'m1' if i % 3 else 'm2'}:q{i}" for i in range(30)]
    assert outs[30].text == "m1:hot" and ("m1", 0.8) in stub.singles  # sampling runs alone
    assert max(n for _, n in stub.batches) > 1
    assert sum(n for _, n in stub.batches) + len(stub.singles) == 31
    assert all(n <= GenerationService.MAX_BATCH for _, n in stub.batches)
    assert len(stub.batch_threads) == 1  # one lane: every batch on one generation thread


def test_a_burst_arriving_while_idle_is_one_batch() -> None:
    # Generous: the test machine may be busy.
    service, stub = _stubbed(GATHER_GAP_S=0.25, GATHER_MAX_S=2.0)

    async def one(i: int) -> Any:
        await asyncio.sleep(0.03 * i)  # requests trickle in, as concurrent HTTP calls do
        return await service.generate(_req("m", f"q{i}"))

    async def main() -> list[Any]:
        return await asyncio.gather(*(one(i) for i in range(6)))

    try:
        outs = asyncio.run(main())
    finally:
        service.close()
    assert [o.text for o in outs] == [f"m:q{i}" for i in range(6)]
    assert stub.batches == [("m", 6)] and not stub.singles  # without the wait: 1 alone, then the rest


def test_a_gather_waits_for_requests_still_being_parsed() -> None:
    # The first request of a burst is queued while the server still parses the rest (they arrive 50 ms+ later
    # on a busy machine): counted as arriving, they join its batch instead of the first running alone.
    service, stub = _stubbed(GATHER_GAP_S=0.01, GATHER_MAX_S=5.0)

    async def request(i: int, parsing_s: float) -> Any:
        with service.arriving():  # what the ArrivingGenerations middleware does for POST .../responses
            await asyncio.sleep(parsing_s)  # its body is read and parsed
            service.parsed()  # what the handler does first
            return await service.generate(_req("m", f"q{i}"))

    async def main() -> list[Any]:
        return await asyncio.gather(request(0, 0.0), *(request(i, 0.2 + 0.05 * i) for i in range(1, 4)))

    try:
        outs = asyncio.run(main())
    finally:
        service.close()
    assert [o.text for o in outs] == [f"m:q{i}" for i in range(4)]
    assert stub.batches == [("m", 4)] and not stub.singles  # without the count: q0 alone, then the rest
    assert service._arriving == 0


def test_a_request_that_ends_before_generating_stops_arriving() -> None:
    service, stub = _stubbed(GATHER_GAP_S=0.01, GATHER_MAX_S=5.0)
    with pytest.raises(ValueError), service.arriving():
        raise ValueError("a 422: the body did not validate")
    assert service._arriving == 0
    started = time.monotonic()
    _answer_one(service)  # a later lone request is not held back by the one that never came
    assert time.monotonic() - started < 2.0
    assert stub.singles == [("m", None)]


def test_the_backend_counts_a_responses_request_as_arriving_until_its_handler_starts(tmp_path: Path) -> None:
    from backend.app import create_app
    from backend.settings import BackendSettings

    app = create_app(BackendSettings(data_dir=tmp_path, api_key="k"))
    service: GenerationService = app.state.backend.generation
    seen: list[int] = []
    parsed = service.parsed

    def counted_parsed() -> None:
        seen.append(service._arriving)
        parsed()
        seen.append(service._arriving)

    async def generate(req: GenerationRequest, on_text: Any = None) -> Any:
        from backend.generation import GenerationOutput

        return GenerationOutput("hi", 1, 1)

    service.parsed = counted_parsed  # type: ignore[method-assign]
    service.generate = generate  # type: ignore[method-assign]
    body = {"model": "local:micro-chat", "input": "hello", "store": False}

    async def run() -> list[int]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"Authorization": "Bearer k"}
        ) as c:
            ok = await c.post("/api/v1/llm/responses", json=body)
            bad = await c.post("/api/v1/llm/responses", json={"model": 3})
            return [ok.status_code, bad.status_code]

    try:
        assert asyncio.run(run()) == [200, 400]
    finally:
        service.close()
    assert seen == [1, 0]  # counted by the middleware until the handler started
    assert service._arriving == 0  # the refused one too, once refused


def test_callers_answered_together_come_back_as_one_batch() -> None:
    service, stub = _stubbed(GATHER_GAP_S=0.01, RETURN_WAIT_S=2.0)  # generous: the test machine may be busy

    async def caller(i: int) -> None:
        await service.generate(_req("m", f"first {i}"))
        await asyncio.sleep(0.04 * i)  # back one by one, further apart than the gather gap
        await service.generate(_req("m", f"again {i}"))

    # The first round only sets the scene: its drain waits until all five are queued, however busy the machine.
    gate = threading.Event()
    service._executor.submit(gate.wait)

    async def main() -> None:
        callers = [asyncio.ensure_future(caller(i)) for i in range(5)]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(*callers)

    try:
        asyncio.run(main())
    finally:
        gate.set()
        service.close()
    assert stub.batches == [("m", 5), ("m", 5)] and not stub.singles


def test_a_backlog_beyond_one_batch_goes_next_without_the_return_wait() -> None:
    # 100 requests queued at once (an eval stage with every prompt in flight): a full batch, then at once the
    # 36 left; waiting RETURN_WAIT_S for the first batch's callers would only delay those already queued.
    service, stub = _stubbed(RETURN_WAIT_S=5.0)
    gate = threading.Event()
    service._executor.submit(gate.wait)
    n = GenerationService.MAX_BATCH + 36

    async def main() -> tuple[list[Any], float]:
        asked = [asyncio.ensure_future(service.generate(_req("m", f"q{i}"))) for i in range(n)]
        await asyncio.sleep(0.05)
        released = time.monotonic()
        gate.set()
        outs = await asyncio.gather(*asked)
        return outs, time.monotonic() - released

    try:
        outs, took = asyncio.run(main())
    finally:
        gate.set()
        service.close()
    assert [o.text for o in outs] == [f"m:q{i}" for i in range(n)]
    assert stub.batches == [("m", GenerationService.MAX_BATCH), ("m", 36)]
    assert took < 2.5  # the return wait alone would be 5 s


class OverlapStub(StubGenerator):
    """A ``StubGenerator`` whose batches take a while and that records how many ran at once, on how many torch
    threads each lane ran, and whether a single (sampled) request ever ran beside anything."""

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.most_at_once = 0
        self.single_shared = False
        self.lane_threads: dict[str, list[int]] = {}
        self._guard = threading.Lock()

    def generate(self, model_ref: Any, messages: Any, **kw: Any) -> GenerationResult:
        with self._guard:
            self.running += 1
            self.single_shared |= self.running > 1
        try:
            time.sleep(0.1)
            return super().generate(model_ref, messages, **kw)
        finally:
            with self._guard:
                self.single_shared |= self.running > 1
                self.running -= 1

    def use_threads(self, n: int) -> None:
        super().use_threads(n)
        self.lane_threads.setdefault(threading.current_thread().name, []).append(n)

    def generate_greedy_batch(
        self, model_ref: Any, items: list[BatchItem], *, before_step: Any = None
    ) -> list[GenerationResult]:
        with self._guard:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            for _ in range(10):  # decoding steps: the lane re-fits its threads before each
                if before_step is not None:
                    before_step()
                time.sleep(0.02)
            return super().generate_greedy_batch(model_ref, items)
        finally:
            with self._guard:
                self.running -= 1


def _ask_all(service: GenerationService, reqs: list[GenerationRequest]) -> list[Any]:
    """Every request's answer, all asked at once; then the service is closed."""

    async def main() -> list[Any]:
        return await asyncio.gather(*(service.generate(r) for r in reqs))

    try:
        return asyncio.run(main())
    finally:
        service.close()


def _backlog(service: GenerationService, n: int) -> list[Any]:
    return _ask_all(service, [_req("m", f"q{i}") for i in range(n)])


def _micro_chat(word: str, n: int, max_tokens: int) -> list[GenerationRequest]:
    """``n`` greedy requests to local:micro-chat, the i-th repeating ``word`` i times."""
    return [
        GenerationRequest(
            "local:micro-chat",
            [{"role": "user", "content": f"{word} " * i}],
            None,
            max_tokens,
            None,
            None,
            None,
        )
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize(("cores", "shared"), [(2, 1), (8, 4)])
def test_a_backlog_runs_on_a_second_lane_beside_the_first_on_free_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, shared: int
) -> None:
    # An eval stage's 105 prompts after training: the 64 and the 41 decode at once, the free cores split
    # between them (on 2 cores one torch thread each).
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    service = GenerationService(lambda: 0, max_lanes=2)
    service._others = FixedLoad(0.0)
    stub = OverlapStub()
    service._generator = stub
    n = GenerationService.MAX_BATCH + 41
    outs = _backlog(service, n)
    assert [o.text for o in outs] == [f"m:q{i}" for i in range(n)]
    assert sorted(size for _, size in stub.batches) == [41, GenerationService.MAX_BATCH]
    assert stub.most_at_once == 2
    assert len(stub.lane_threads) == 2
    # The second lane runs on its share from its start; the first drops to it once the second runs.
    assert any(counts[0] == shared for counts in stub.lane_threads.values())
    assert all(shared in counts for counts in stub.lane_threads.values())
    assert all(max(counts) <= cores for counts in stub.lane_threads.values())


def test_a_sampled_request_runs_alone_beside_no_other_lane() -> None:
    # A seeded sample reseeds the process-wide RNG: another lane sampling (or decoding) beside it would make
    # it unreproducible, so it waits for the lanes to finish and none starts while it runs.
    service = GenerationService(lambda: 0, max_lanes=2)
    service._others = FixedLoad(0.0)
    stub = OverlapStub()
    service._generator = stub

    async def sampled(i: int) -> Any:
        await asyncio.sleep(0.05)  # the greedy batches have started on their lanes
        return await service.generate(_req("m", f"s{i}", temperature=0.7))

    async def main() -> list[Any]:
        greedy = [service.generate(_req("m", f"q{i}")) for i in range(GenerationService.MAX_BATCH + 20)]
        return await asyncio.gather(*greedy, *(sampled(i) for i in range(3)))

    try:
        outs = asyncio.run(main())
    finally:
        service.close()
    assert len(outs) == GenerationService.MAX_BATCH + 23 and len(stub.singles) == 3
    assert stub.most_at_once == 2  # the greedy batches still ran side by side
    assert not stub.single_shared


def test_the_generator_is_built_once_when_two_lanes_start_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.trainer import generate

    built: list[int] = []

    class SlowGenerator(StubGenerator):
        def __init__(self) -> None:
            super().__init__()
            time.sleep(0.2)  # imports and torch set-up take a while on a fresh server
            built.append(1)

    monkeypatch.setattr(generate, "Generator", SlowGenerator)
    service = GenerationService(lambda: 0, max_lanes=2)
    try:
        lanes = [threading.Thread(target=service._gen) for _ in range(2)]
        for lane in lanes:
            lane.start()
        for lane in lanes:
            lane.join()
    finally:
        service.close()
    assert built == [1]


def test_a_request_waiting_for_a_lane_ends_when_the_service_closes() -> None:
    service = GenerationService(lambda: 0, max_lanes=2)
    service._others = FixedLoad(0.0)
    release = threading.Event()
    outcome: list[BaseException | None] = []

    def waiter() -> None:
        try:
            with service._lane_held(alone=True):
                outcome.append(None)
        except RuntimeError as exc:
            outcome.append(exc)

    with service._lane_held():  # a busy lane: the lone request waits
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.1)
        service.close()
        thread.join(5)
        release.set()
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError)


@pytest.mark.parametrize(("training", "others"), [(1, 0.0), (0, 1.2), (0, None)])
def test_no_second_lane_while_a_job_trains_or_the_cores_are_busy_or_unmeasured(
    monkeypatch: pytest.MonkeyPatch, training: int, others: float | None
) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    service = GenerationService(lambda: training, max_lanes=2)
    service._others = FixedLoad(others)
    stub = OverlapStub()
    service._generator = stub
    outs = _backlog(service, GenerationService.MAX_BATCH + 10)
    assert len(outs) == GenerationService.MAX_BATCH + 10
    assert stub.batches == [("m", GenerationService.MAX_BATCH), ("m", 10)]  # in turn
    assert stub.most_at_once == 1


@pytest.mark.parametrize(
    ("training", "cores", "others", "expected"),
    [
        (0, 2, 0.0, 2),
        (0, 2, 0.9, 2),  # a part-busy core still takes a lane (no barrier to wait at)
        (0, 2, 1.0, 1),
        (1, 2, 0.0, 1),  # the trainer's core is not shared
        (0, 1, 0.0, 1),
        (1, 8, 0.5, 4),
        (2, 2, 0.0, 1),  # never none
    ],
)
def test_generation_lanes_are_the_cores_left_less_whole_busy_ones(
    monkeypatch: pytest.MonkeyPatch, training: int, cores: int, others: float, expected: int
) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert generation_lanes(training, cores, others) == expected


def test_two_lanes_give_a_real_model_the_answers_one_lane_gives(tmp_path: Path) -> None:
    # The real generator on two threads at once (one model loaded once, per-thread torch threads).
    from backend.app import create_app
    from backend.settings import BackendSettings

    def answers(lanes: int, data_dir: Path) -> tuple[list[tuple[str, int, int]], int]:
        app = create_app(BackendSettings(data_dir=data_dir, api_key="k"))
        service = GenerationService(lambda: 0, max_lanes=lanes)
        service._generator = app.state.backend.generation._gen()
        service._others = FixedLoad(0.0)
        service.MAX_BATCH = 3
        running, most = [0], [0]
        real = service._generator.generate_greedy_batch

        def counted(*args: Any, **kw: Any) -> Any:
            running[0] += 1
            most[0] = max(most[0], running[0])
            try:
                return real(*args, **kw)
            finally:
                running[0] -= 1

        service._generator.generate_greedy_batch = counted
        outs = _ask_all(service, _micro_chat("hello", 6, 12))
        return [(o.text, o.input_tokens, o.output_tokens) for o in outs], most[0]

    one, one_most = answers(1, tmp_path / "one")
    two, two_most = answers(2, tmp_path / "two")
    assert one_most == 1 and two_most == 2
    assert two == one
    assert len({n for _, n, _ in one}) == 6  # six different prompts, answered by the batches they were in


def test_a_failed_batch_fails_its_requests_only() -> None:
    service = GenerationService()
    service._generator = StubGenerator(fail_model="gone")

    async def main() -> list[Any]:
        reqs = [_req("gone", f"q{i}") for i in range(4)] + [_req("ok", "fine")]
        return await asyncio.gather(*(service.generate(r) for r in reqs), return_exceptions=True)

    try:
        outs = asyncio.run(main())
    finally:
        service.close()
    assert outs[-1].text == "ok:fine"
    assert all(isinstance(o, FileNotFoundError) for o in outs[:4])


def test_closed_service_refuses_new_work() -> None:
    service = GenerationService()
    service.close()
    with pytest.raises(RuntimeError, match="shut down"):
        asyncio.run(service.generate(_req("m", "q")))


@pytest.mark.parametrize(
    ("training", "cores", "others", "trainer_env", "expected"),
    [
        (0, 2, 0.0, None, 2),  # nothing trains, nothing else runs: every core
        (0, 2, 0.2, None, 2),  # a client's bookkeeping leaves the core free
        (0, 2, 0.5, None, 1),  # a neighbour half-using a core takes it
        (0, 2, 1.7, None, 1),
        (1, 2, 0.0, None, 1),  # the trainer's half of two
        (2, 2, 0.0, None, 1),  # two trainers hold both: still one, never none
        (1, 8, 0.0, None, 4),
        (1, 8, 2.5, None, 1),
        (3, 8, 0.0, None, 1),
        (0, 1, 0.0, None, 1),
        (1, 4, 0.0, "3", 1),  # a trainer the user set to 3 threads leaves one of four
        (0, 4, 0.0, "3", 4),
    ],
)
def test_generation_threads_are_the_cores_training_and_others_leave_free(
    monkeypatch: pytest.MonkeyPatch,
    training: int,
    cores: int,
    others: float,
    trainer_env: str | None,
    expected: int,
) -> None:
    if trainer_env is None:
        monkeypatch.delenv(THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(THREADS_ENV, trainer_env)
    assert generation_threads(training, cores, others) == expected


def test_other_load_is_the_busy_time_not_this_process_or_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"wall": 100.0, "own": 5.0, "busy": 50.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(threads.time, "process_time", lambda: clock["own"])
    monkeypatch.setattr(threads, "busy_cpu_seconds", lambda: clock["busy"])
    load = OtherLoad()
    assert load.sample(0.0) is None  # nothing to compare with yet

    def after(wall: float, own: float, busy: float, workers: float) -> float | None:
        clock["wall"] += wall
        clock["own"] += own
        clock["busy"] += busy
        return load.sample(workers)

    # 0.5 s: the cores were busy 1.4 s, 0.9 of it this process, 0.25 a worker's expected share.
    assert after(0.5, 0.9, 1.4, 0.5) == pytest.approx(0.5)
    assert after(0.05, 0.1, 0.1, 0.0) == pytest.approx(0.5)  # too short a window: the last estimate
    assert after(0.5, 1.0, 1.0, 0.0) == pytest.approx(0.0)  # this process alone
    assert after(3.0, 0.0, 3.0, 0.0) is None  # after a long gap: not known
    monkeypatch.setattr(threads, "busy_cpu_seconds", lambda: None)
    assert after(0.5, 0.0, 0.0, 0.0) is None  # no /proc/stat


def test_busy_cpu_seconds_reads_this_machine() -> None:
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat")
    first = threads.busy_cpu_seconds()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # keep a core busy
        pass
    second = threads.busy_cpu_seconds()
    assert first is not None and second is not None and second - first >= 0.1
    assert threads.busy_cpu_seconds(cpus=[]) is None


def test_process_cpu_seconds_reads_a_process_cpu_time() -> None:
    import os

    end = time.monotonic() + 0.2
    while time.monotonic() < end:  # keep a core busy
        pass
    seconds = threads.process_cpu_seconds(os.getpid())
    assert seconds is not None and abs(seconds - time.process_time()) < 0.1
    assert threads.process_cpu_seconds(2**22 + 1) is None  # past pid_max: no such process


def test_each_batch_runs_on_the_cores_free_when_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    training = [0]
    service = GenerationService(lambda: training[0])
    service._others = FixedLoad(0.0)
    stub = StubGenerator()
    service._generator = stub

    async def burst(n: int) -> None:
        await asyncio.gather(*(service.generate(_req("m", f"q{i}")) for i in range(n)))

    async def main() -> None:
        await burst(4)
        training[0] = 1
        await burst(4)
        training[0] = 0
        await service.generate(_req("m", "hot", 0.7))  # a sampled request alone fits them too

    try:
        asyncio.run(main())
    finally:
        service.close()
    free = usable_cores()
    assert stub.torch_threads[0] == free and stub.torch_threads[-1] == free
    assert generation_threads(1) in stub.torch_threads


@pytest.mark.parametrize(("others", "expected"), [(None, "share"), (1.5, 1), (0.0, "all")])
def test_a_busy_or_unmeasured_machine_gets_fewer_threads(
    monkeypatch: pytest.MonkeyPatch, others: float | None, expected: Any
) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    service, stub = _stubbed(lambda: 0)
    service._others = FixedLoad(others)
    _answer_one(service)
    want = {"share": generation_threads(1), "all": usable_cores()}.get(expected, expected)
    assert stub.torch_threads == [want]


def test_an_unknown_training_state_means_one_thread() -> None:
    def broken() -> int:
        raise RuntimeError("database is locked")

    service, stub = _stubbed(broken)
    _answer_one(service)
    assert stub.torch_threads == [1]


def _insert_job(app: Any, status: str) -> None:
    app.state.backend.db.execute(
        "INSERT INTO jobs (id, owner, created_at, model, base_model_ref, status, training_file,"
        " method_type, hyperparameters, seed) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (f"ftjob_{status}", "owner", 0, "m", "m", status, "file-x", "supervised", "{}", 1),
    )


def test_a_real_batch_uses_every_core_of_an_idle_machine_and_refits_mid_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from backend.app import create_app
    from backend.settings import BackendSettings
    from backend.trainer.decode import LeanDecoder

    monkeypatch.delenv(THREADS_ENV, raising=False)
    app = create_app(BackendSettings(data_dir=tmp_path, api_key="k"))  # no lifespan: no worker starts
    service: GenerationService = app.state.backend.generation
    service.THREADS_RECHECK_S = 0.0
    service._others = FixedLoad(0.0)  # an idle machine (this one is shared while tests run)
    seen: list[int] = []  # torch threads of the generation thread at each decoding step
    real_step = LeanDecoder._step

    def step(self: LeanDecoder, *args: Any) -> Any:
        seen.append(torch.get_num_threads())
        if len(seen) == 3:  # a job is queued mid-batch: the next steps leave its worker the trainer's share
            _insert_job(app, "queued")
        return real_step(self, *args)

    monkeypatch.setattr(LeanDecoder, "_step", step)
    outs = _ask_all(service, _micro_chat("hi", 4, 8))
    assert len(outs) == 4 and all(o.output_tokens >= 1 for o in outs)
    assert seen[0] == usable_cores()
    assert seen[-1] == generation_threads(1) and len(seen) > 3


def test_training_workers_count_running_and_queued_jobs_up_to_the_pool(tmp_path: Path) -> None:
    from backend.app import create_app
    from backend.settings import BackendSettings

    app = create_app(BackendSettings(data_dir=tmp_path, api_key="k", worker_concurrency=2))
    jobs = app.state.backend.jobs
    for status in ("succeeded", "paused", "failed", "cancelled", "validating_files"):
        _insert_job(app, status)
    assert jobs.training_workers() == 0
    _insert_job(app, "running")
    assert jobs.training_workers() == 1
    _insert_job(app, "queued")
    app.state.backend.db.execute(
        "INSERT INTO jobs (id, owner, created_at, model, base_model_ref, status, training_file,"
        " method_type, hyperparameters, seed) VALUES ('ftjob_q2','owner',0,'m','m','queued','f','supervised','{}',1)"
    )
    assert jobs.training_workers() == 2  # three waiting or training, two workers


def test_a_cgroup_cpu_quota_caps_the_usable_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`docker --cpus=2` on a big host: the affinity shows every host core, the quota says 2."""
    import os

    from backend.trainer import threads

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_quota(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(str(tmp_path)) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_quota(str(v1)) == 2.0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 1.5)
    assert threads.usable_cores() == 2
    assert threads.generation_threads(0) == 2
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    assert threads.usable_cores() == 64
