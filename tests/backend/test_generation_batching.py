"""GenerationService: concurrent greedy requests for one model are answered in batches, in order."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from backend.generation import GenerationRequest, GenerationService
from backend.trainer.generate import BatchItem, GenerationResult


class StubGenerator:
    """Echoes the last message; records how requests were grouped."""

    def __init__(self, fail_model: str | None = None) -> None:
        self.batches: list[tuple[str, int]] = []
        self.singles: list[tuple[str, float | None]] = []
        self.fail_model = fail_model
        self.threads: set[str] = set()

    def _echo(self, model: str, messages: list[dict[str, Any]], max_tokens: int | None) -> GenerationResult:
        return GenerationResult(f"{model}:{messages[-1]['content']}", 1, max_tokens or 0)

    def generate(self, model_ref: Any, messages: Any, **kw: Any) -> GenerationResult:
        self.threads.add(threading.current_thread().name)
        if str(model_ref) == self.fail_model:
            raise FileNotFoundError("weights gone")
        time.sleep(0.02)
        self.singles.append((str(model_ref), kw.get("temperature")))
        return self._echo(str(model_ref), messages, kw.get("max_output_tokens"))

    def generate_greedy_batch(self, model_ref: Any, items: list[BatchItem]) -> list[GenerationResult]:
        self.threads.add(threading.current_thread().name)
        if str(model_ref) == self.fail_model:
            raise FileNotFoundError("weights gone")
        time.sleep(0.02)
        self.batches.append((str(model_ref), len(items)))
        return [self._echo(str(model_ref), i.messages, i.max_output_tokens) for i in items]


def _req(model: str, text: str, temperature: float | None = None) -> GenerationRequest:
    return GenerationRequest(model, [{"role": "user", "content": text}], None, 7, temperature, None, None)


def test_concurrent_greedy_requests_are_batched_per_model() -> None:
    service = GenerationService()
    stub = StubGenerator()
    service._generator = stub

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
    assert len(stub.threads) == 1  # still one generation thread


def test_a_burst_arriving_while_idle_is_one_batch() -> None:
    service = GenerationService()
    stub = StubGenerator()
    service._generator = stub
    service.GATHER_GAP_S, service.GATHER_MAX_S = 0.25, 2.0  # generous: the test machine may be busy

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
