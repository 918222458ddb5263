"""Text generation for /responses: one cached trainer `Generator`, run off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    """Serialises generations on a single thread: the Generator caches loaded models and is not thread-safe.

    The one-worker executor is the only caller of ``_generate``, so it needs no lock of its own.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftpipe-generate")
        self._generator: Any = None

    def _generate(self, req: GenerationRequest, on_text: Callable[[str], None] | None) -> GenerationOutput:
        if self._generator is None:
            from backend.trainer.generate import Generator

            self._generator = Generator()
        result = self._generator.generate(
            req.model_ref,
            req.messages,
            instructions=req.instructions,
            max_output_tokens=req.max_output_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            truncate=req.truncate,
            on_text=on_text,
        )
        return GenerationOutput(
            text=result.text, input_tokens=result.input_tokens, output_tokens=result.output_tokens
        )

    async def generate(
        self, req: GenerationRequest, on_text: Callable[[str], None] | None = None
    ) -> GenerationOutput:
        """Generate without blocking the event loop; ``on_text`` gets text pieces on this loop as they come."""
        loop = asyncio.get_running_loop()
        emit: Callable[[str], None] | None = None
        if on_text is not None:
            callback = on_text

            def emit(piece: str) -> None:
                loop.call_soon_threadsafe(callback, piece)

        return await loop.run_in_executor(self._executor, self._generate, req, emit)

    def close(self) -> None:
        """Stop accepting work (a generation in progress finishes on its thread)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
