"""Text generation for /responses: one cached trainer `Generator`, run off the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from backend.trainer.threads import (
    OtherLoad,
    generation_lanes,
    generation_threads,
    trainer_threads,
    usable_cores,
)

log = logging.getLogger("backend.generation")

# Per HTTP request: [the service] while the request counts as arriving at it (GenerationService.arriving).
_ARRIVING: ContextVar[list[Any] | None] = ContextVar("ftpipe_generation_arriving", default=None)


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate from, already resolved to a model reference."""

    model_ref: str | Path
    messages: list[dict[str, Any]]
    instructions: str | None
    max_output_tokens: int
    temperature: float | None  # None: the generator's default (greedy)
    top_p: float | None
    seed: int | None
    truncate: bool = True  # False: a prompt longer than the context window fails (ContextTooLong)


@dataclass(frozen=True)
class GenerationOutput:
    """Generated text and token counts."""

    text: str
    input_tokens: int
    output_tokens: int


class GenerationService:
    """Runs generations off the event loop, on up to ``max_lanes`` threads (lanes) at once.

    Plain greedy requests for the same model that arrive while the thread is busy, or in a burst while it is
    idle, are answered together in one batched call: on a small model a batch of 16 costs little more than
    one request, so concurrent callers (an eval stage, several users) are served several times faster.
    Sampling, streaming and no-truncation requests run alone (a seeded sample stays reproducible; a stream
    gets its own deltas).

    The thread runs torch on the cores that neither the training workers nor other processes hold
    (``generation_threads``): all of them on an otherwise idle machine while nothing trains. ``training_workers``
    says how many workers train and ``OtherLoad`` measures the rest; both are asked when a generation starts
    and again every THREADS_RECHECK_S between decoding steps, so a job or a busy neighbour that starts or ends
    mid-batch changes the count within that time.

    A second batch (the backlog beyond MAX_BATCH of an eval stage, or another model's) runs on a second lane
    beside the first while nothing trains on that core and other processes leave it mostly free
    (``generation_lanes``); lanes running together split the free cores between them. A lone batch keeps the OpenMP
    threads only while no other process takes part of a core (their barriers wait for a descheduled thread),
    so an eval's 64 + 41 prompts after training, beside the flow's own work, mostly ran one after the other on
    one thread; two lanes share such a core gracefully.
    """

    MAX_BATCH = 64
    # An idle thread waits while a burst keeps arriving (a request at most GATHER_GAP_S after the previous
    # one, or while requests are still being read and parsed: ``arriving``), at most GATHER_MAX_S: concurrent
    # callers' requests reach the server some ms apart (tens when 64 open their connections on a busy
    # machine), and without the wait the first of them would run alone and the rest in a second batch. The
    # server reads and parses a burst's requests one after the other on its event loop (~1 ms each), so the
    # first is queued while the others are still being parsed: an eval's 105 prompts after training reached
    # the queue as 1 and, 51 ms later, 104, and the lone one held a lane 0.36 s. The count is of all models
    # (a model is known once parsed), so other traffic can hold a gather up to GATHER_MAX_S. A lone request
    # pays GATHER_GAP_S.
    GATHER_GAP_S = 0.03
    GATHER_MAX_S = 0.2
    # Callers answered together tend to ask again together (an eval stage with N in flight), but their next
    # requests reach the queue only as the event loop gets through sending the batch's N responses, more than
    # GATHER_GAP_S apart: so the batch after one of N waits up to RETURN_WAIT_S for N to queue. Measured on 2
    # busy cores, 105 eval prompts at 64 in flight: with 10/50 ms and no return wait they ran as one batch
    # of 64 and one of 41 in 1 of 4 runs (else e.g. 64, 1 alone, 40 or 24, 40, 24, 17); with these, 3 of 4.
    # Requests already queued when a batch was taken (a backlog: callers with more than MAX_BATCH in flight,
    # as the eval stage has on this server) go next at once: waiting for the batch's callers would only delay
    # them (measured: 0.23-0.25 s between the 64 and the 41 of 105 prompts sent at once).
    RETURN_WAIT_S = 0.25
    THREADS_RECHECK_S = 0.25
    ARRIVING_POLL_S = 0.005

    # How often a batch waiting for a lane asks again whether the cores allow one more.
    LANE_RECHECK_S = 0.05

    def __init__(
        self, training_workers: Callable[[], int] | None = None, *, max_lanes: int | None = None
    ) -> None:
        self.max_lanes = max(1, max_lanes if max_lanes is not None else usable_cores())
        self._executor = ThreadPoolExecutor(max_workers=self.max_lanes, thread_name_prefix="ftpipe-generate")
        # Requests that run alone wait on their own thread, so a waiting one never holds a lane's thread.
        self._alone_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftpipe-generate-alone")
        self._generator: Any = None
        self._training_workers = training_workers or (lambda: 0)
        self._lane = threading.local()  # per lane: when its threads were fitted, and for how many busy lanes
        self._lanes = threading.Condition()  # guards _busy_lanes and the load sampling
        self._busy_lanes = 0
        self._alone = False  # a lane runs a request that must not share the process (a seeded sample)
        self._alone_waiting = False  # one waits for the busy lanes to finish: no other lane starts meanwhile
        self._others = OtherLoad()
        self._building = threading.Lock()  # the Generator is built once, by the first lane that needs it
        # Per model: the size and end (monotonic) of its last batch; read by its next drain's gather.
        self._answered: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()  # guards the queues: appended on the event loop, drained on the thread
        self._queues: dict[str, list[tuple[GenerationRequest, Future[GenerationOutput]]]] = {}
        self._arrived: dict[str, float] = {}  # per model: when its latest queued request arrived (monotonic)
        # HTTP requests for generations being read and parsed (``arriving``) and when one last stopped being
        # (monotonic), guarded by _lock.
        self._arriving = 0
        self._parsed_at = float("-inf")
        self._closed = False

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Count the HTTP request this block serves as arriving until its handler starts (``parsed``) or it
        ends without one (a 4xx): a gather waits for requests still being read and parsed."""
        holder: list[Any] = [self]
        with self._lock:
            self._arriving += 1
        token = _ARRIVING.set(holder)
        try:
            yield
        finally:
            try:
                self._leave(holder)
            finally:
                _ARRIVING.reset(token)

    def parsed(self) -> None:
        """The current request (if ``arriving`` counts it) is parsed: its generation is asked within moments."""
        self._leave(_ARRIVING.get())

    def _leave(self, holder: list[Any] | None) -> None:
        # Once per request; its moment counts like an arrival, so a gather waits GATHER_GAP_S more for it
        # to be queued (it may still be between its handler's start and ``generate``).
        if holder is not None and holder[0] is self:
            with self._lock:
                holder[0] = None
                self._arriving -= 1
                self._parsed_at = time.monotonic()

    def _gen(self) -> Any:
        if self._generator is None:
            with self._building:
                if self._generator is None:
                    from backend.trainer.generate import Generator

                    self._generator = Generator()
        return self._generator

    def _load(self) -> tuple[int, float | None] | None:
        """Training workers and other processes' busy cores now (others None: not measured yet); None when
        the workers cannot be counted. Called with ``_lanes`` held (one lane samples at a time)."""
        try:
            training = self._training_workers()
        except Exception:  # e.g. SQLite busy: the fewest threads and lanes rather than oversubscribed cores
            log.debug("could not count the training workers", exc_info=True)
            return None
        try:
            others = self._others.sample(training * trainer_threads())
        except Exception:  # an unusual /proc/stat (gVisor, odd kernels): measured as unknown, never a failure
            log.debug("could not measure the other load", exc_info=True)
            others = None
        return training, others

    def _fit_threads(self, *, recheck: bool = False) -> None:
        """Set this lane's torch threads to its share of the cores free now (``recheck``: unless fitted lately
        and the number of busy lanes is the same): the free cores split evenly between the busy lanes."""
        t = time.monotonic()
        lane = self._lane
        with self._lanes:
            busy = self._busy_lanes
            lately = t - getattr(lane, "fitted", float("-inf")) < self.THREADS_RECHECK_S
            if recheck and lately and getattr(lane, "busy", busy) == busy:
                return
            lane.fitted, lane.busy = t, busy
            load = self._load()
        if load is None:
            self._gen().use_threads(1)
            return
        training, others = load
        # Until the machine's other load is measured (the first 0.25 s after an idle spell, or never where
        # /proc/stat is missing), the share a training worker would leave: the old, safe count.
        free = (
            generation_threads(max(training, 1))
            if others is None
            else generation_threads(training, others=others)
        )
        self._gen().use_threads(max(1, free // max(1, busy)))

    def _recheck_threads(self) -> None:
        self._fit_threads(recheck=True)

    def _lanes_free(self) -> int:
        """Lanes the cores allow now (``generation_lanes``); 1 while the load is unknown."""
        load = self._load()
        if load is None or load[1] is None:
            return 1
        return min(self.max_lanes, generation_lanes(load[0], others=load[1]))

    @contextmanager
    def _lane_held(self, *, alone: bool = False) -> Iterator[None]:
        """Hold a lane for one generation: at once when none is busy, else when the cores allow one more;
        ``alone``: only while no other lane is busy, and none starts beside it. Raises RuntimeError once
        the service is closed."""
        with self._lanes:
            try:
                while (
                    self._alone
                    or (self._alone_waiting and not alone)
                    or (self._busy_lanes and (alone or self._busy_lanes >= self._lanes_free()))
                ):
                    if self._closed:
                        raise RuntimeError("the generation service is shut down")
                    self._alone_waiting |= alone
                    self._lanes.wait(self.LANE_RECHECK_S)
            finally:
                if alone:
                    self._alone_waiting = False
            self._busy_lanes += 1
            self._alone = alone
        try:
            yield
        finally:
            with self._lanes:
                self._busy_lanes -= 1
                self._alone = False
                self._lanes.notify_all()

    def _generate_alone(
        self, req: GenerationRequest, on_text: Callable[[str], None] | None
    ) -> GenerationOutput:
        # Alone: a seeded sample reseeds the process-wide RNG (fork_rng), and HF ``generate`` (sampling,
        # streams of models the lean decoder does not mirror) is not known to be safe on two threads at once.
        with self._lane_held(alone=True):
            return self._generate(req, on_text)

    def _generate(self, req: GenerationRequest, on_text: Callable[[str], None] | None) -> GenerationOutput:
        self._fit_threads()
        result = self._gen().generate(
            req.model_ref,
            req.messages,
            instructions=req.instructions,
            max_output_tokens=req.max_output_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            truncate=req.truncate,
            on_text=on_text,
            before_step=self._recheck_threads,
        )
        return GenerationOutput(
            text=result.text, input_tokens=result.input_tokens, output_tokens=result.output_tokens
        )

    def _gather(self, key: str, backlog: bool = False) -> None:
        """Wait while a burst of requests for ``key`` is still arriving (on the generation thread); a
        ``backlog`` (requests left over from the previous batch) does not wait for that batch's callers, only
        for the rest of a burst still arriving."""
        answered, answered_at = self._answered.get(key, (0, float("-inf")))
        returning = 0 if backlog else min(answered, self.MAX_BATCH)
        until = answered_at + self.RETURN_WAIT_S
        while returning > 1 and time.monotonic() < until:
            with self._lock:
                if len(self._queues.get(key, [])) >= returning:
                    break
            time.sleep(0.005)
        deadline = time.monotonic() + self.GATHER_MAX_S
        while True:
            with self._lock:
                queued = len(self._queues.get(key, []))
                last = max(self._arrived.get(key, 0.0), self._parsed_at)
                arriving = self._arriving
            now = time.monotonic()
            if not 0 < queued < self.MAX_BATCH or now >= deadline:
                return
            if arriving > 0:  # the rest of a burst is still being parsed: queued within moments
                time.sleep(min(self.ARRIVING_POLL_S, deadline - now))
                continue
            wait = min(last + self.GATHER_GAP_S, deadline) - now
            if wait <= 0:
                return
            time.sleep(wait)

    def _drain(self, key: str, backlog: bool = False) -> None:
        """Answer up to MAX_BATCH queued greedy requests for one model (runs on a lane; what is left over
        goes to the next lane free)."""
        self._gather(key, backlog)  # before taking a lane: a lane waiting for callers would count as busy
        with self._lane_held():
            self._drain_held(key)

    def _drain_held(self, key: str) -> None:
        from backend.trainer.generate import BatchItem

        with self._lock:
            queue = self._queues.get(key, [])
            batch, queue[: self.MAX_BATCH] = queue[: self.MAX_BATCH], []
            if queue:
                self._executor.submit(self._drain, key, True)
            else:
                self._queues.pop(key, None)
                self._arrived.pop(key, None)
        batch = [(req, fut) for req, fut in batch if fut.set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            if len(batch) == 1:
                outputs = [self._generate(batch[0][0], None)]
            else:
                self._fit_threads()
                results = self._gen().generate_greedy_batch(
                    batch[0][0].model_ref,
                    [BatchItem(r.messages, r.instructions, r.max_output_tokens) for r, _ in batch],
                    before_step=self._recheck_threads,
                )
                outputs = [GenerationOutput(r.text, r.input_tokens, r.output_tokens) for r in results]
        except BaseException as exc:
            for _, fut in batch:
                fut.set_exception(exc)
            return
        self._answered[key] = (len(batch), time.monotonic())
        for (_, fut), out in zip(batch, outputs, strict=True):
            fut.set_result(out)

    async def generate(
        self, req: GenerationRequest, on_text: Callable[[str], None] | None = None
    ) -> GenerationOutput:
        """Generate without blocking the event loop; ``on_text`` gets text pieces on this loop as they come."""
        loop = asyncio.get_running_loop()
        if on_text is not None or req.temperature or not req.truncate:
            if self._closed:
                raise RuntimeError("the generation service is shut down")
            emit: Callable[[str], None] | None = None
            if on_text is not None:
                callback = on_text

                def emit(piece: str) -> None:
                    loop.call_soon_threadsafe(callback, piece)

            return await loop.run_in_executor(self._alone_executor, self._generate_alone, req, emit)
        fut: Future[GenerationOutput] = Future()
        key = str(req.model_ref)
        with self._lock:
            if self._closed:
                raise RuntimeError("the generation service is shut down")
            queue = self._queues.setdefault(key, [])
            queue.append((req, fut))
            self._arrived[key] = time.monotonic()
            if len(queue) == 1:  # no drain pending for this model: schedule one
                self._executor.submit(self._drain, key)
        return await asyncio.wrap_future(fut)

    def close(self) -> None:
        """Stop accepting work (a generation in progress finishes on its thread; queued ones are cancelled)."""
        with self._lock:
            self._closed = True
            for queue in self._queues.values():
                for _, fut in queue:
                    fut.cancel()
            self._queues.clear()
            self._arrived.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._alone_executor.shutdown(wait=False, cancel_futures=True)
        with self._lanes:
            self._lanes.notify_all()  # a request waiting for a lane sees the service closed


class ArrivingGenerations:
    """ASGI middleware counting each ``POST .../responses`` as arriving at ``service`` until its handler starts."""

    def __init__(self, app: ASGIApp, service: GenerationService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not scope["path"].rstrip("/").endswith("/responses")
        ):
            await self.app(scope, receive, send)
            return
        with self.service.arriving():
            await self.app(scope, receive, send)
