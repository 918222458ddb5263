"""Text generation from base models and trained model dirs, with an LRU cache of loaded models."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation.streamers import BaseStreamer

from backend.trainer.chat import ChatFormat
from backend.trainer.decode import BeforeStep, LeanDecoder, lean_unsupported
from backend.trainer.device import prepare_device, resolve_device
from backend.trainer.modeling import load_for_inference
from backend.trainer.spec import ContextTooLong
from backend.trainer.train import configure_threads
from contract.wire import DEFAULT_MAX_OUTPUT_TOKENS

log = logging.getLogger("backend.generate")


@dataclass(frozen=True)
class GenerationResult:
    """Generated text and token usage."""

    text: str
    input_tokens: int
    output_tokens: int


class _TextDeltas(BaseStreamer):
    """Hands `emit` the reply as it grows, in pieces that concatenate to the final (stripped) text.

    Whitespace at the end is held back until more text follows (the final text is stripped), and so is a
    partial UTF-8 character (byte-level tokens decode it as U+FFFD until the rest arrives). ``generate`` feeds
    it through `put` (prompt first), the lean decoder through `add`.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: list[int], emit: Callable[[str], None]):
        self._tok = tokenizer
        self._stop = set(stop)
        self._emit = emit
        self._ids: list[int] = []
        self._prompt_seen = False
        self.sent = ""

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first passes the prompt itself
            self._prompt_seen = True
            return
        self.add(value.reshape(-1).tolist())

    def add(self, ids: list[int]) -> None:
        """Take newly generated token ids."""
        self._ids.extend(t for t in ids if t not in self._stop)
        text = str(self._tok.decode(self._ids, skip_special_tokens=True)).strip()
        if not text.endswith("\ufffd"):
            self.send(text)

    def end(self) -> None:
        pass

    def send(self, text: str) -> None:
        """Emit what `text` adds to what was sent (nothing if an earlier piece was decoded differently)."""
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self._emit(text[len(self.sent) :])
            self.sent = text


@dataclass(frozen=True)
class BatchItem:
    """One chat of a greedy batch."""

    messages: list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = None


@dataclass
class _Entry:
    model: PreTrainedModel
    fmt: ChatFormat
    max_seq_len: int
    decoder: LeanDecoder | None  # greedy replies; None: they go through HF generate too


class Generator:
    """Generates chat replies; keeps the `cache_size` most recently used models loaded. Several
    threads may generate at once (``backend.generation.GenerationService`` runs a batch per lane).

    Runs on $FTPIPE_TRAINER_DEVICE like the trainer (fp32 weights; TF32 matmuls on CUDA). Greedy replies use
    the lean decoder (`backend.trainer.decode`, same tokens, far less overhead per token) where it mirrors the
    model, else HF ``generate``, as sampled replies always do; ``lean=False`` forces ``generate`` (benchmarks).
    Starts on the trainer's share of the cores (``configure_threads``); the server moves it with `use_threads`.
    """

    def __init__(self, cache_size: int = 4, *, lean: bool = True) -> None:
        self.cache_size = max(1, cache_size)
        self.lean = lean
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        # Generation may run on several threads at once (the server's lanes): a model is loaded once, and
        # each thread keeps its own torch thread count (OpenMP and MKL hold it per thread).
        self._loading = threading.Lock()
        self._local = threading.local()
        self._local.threads = configure_threads()
        self.device = resolve_device()
        prepare_device(self.device)

    @property
    def threads(self) -> int | None:
        """The calling thread's intra-op threads as last set here (None: not set on this thread yet)."""
        return getattr(self._local, "threads", None)

    def use_threads(self, n: int) -> None:
        """Run on ``n`` intra-op threads from now on; call it on the thread that generates (OpenMP keeps the
        count per thread)."""
        if n != self.threads:
            if self.threads is None:
                # A thread's first parallel op would apply the process-wide count set by another thread last
                # (OpenMP's lazy per-thread init), over this thread's own setting: initialise it first.
                torch.get_num_threads()
            torch.set_num_threads(n)
            self._local.threads = n

    def _get(self, model_ref: str | Path) -> _Entry:
        with self._loading:
            return self._get_locked(model_ref)

    def _get_locked(self, model_ref: str | Path) -> _Entry:
        key = str(model_ref)
        entry = self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
            return entry
        model, tokenizer, max_len = load_for_inference(model_ref)
        mod: Any = model
        mod.to(self.device)  # in place; PreTrainedModel.to is typed too narrowly for mypy
        decoder = None
        if self.lean:
            reason = lean_unsupported(model)
            if reason is None:
                decoder = LeanDecoder(model)
            else:
                log.info("greedy replies of %s go through HF generate: %s", key, reason)
        entry = _Entry(model, ChatFormat(tokenizer, max_len), max_len, decoder)
        self._cache[key] = entry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    def generate(
        self,
        model_ref: str | Path,
        messages: list[dict[str, Any]],
        *,
        instructions: str | None = None,
        max_output_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        truncate: bool = True,
        on_text: Callable[[str], None] | None = None,
        before_step: BeforeStep | None = None,
    ) -> GenerationResult:
        """Reply to `messages` (instructions become a leading system message); greedy when temperature is 0/None.

        ``on_text`` receives the reply in pieces as it is generated; ``truncate=False`` raises
        `ContextTooLong` instead of dropping the oldest prompt tokens; ``before_step`` runs before each
        decoding step of the lean decoder.
        """
        entry = self._get(model_ref)
        prompt, max_new = self._prompt(entry, messages, instructions, max_output_tokens, truncate)
        tok = entry.fmt.tokenizer
        stop, pad = self._stops(entry)
        sample = bool(temperature)
        deltas = _TextDeltas(tok, stop, on_text) if on_text is not None else None
        if not sample and entry.decoder is not None:
            on_tokens = None if deltas is None else (lambda _row, ids: deltas.add(ids))
            [new] = entry.decoder.greedy(
                [prompt], [max_new], stop, pad, on_tokens=on_tokens, before_step=before_step
            )
            result = self._reply(entry, new, stop, len(prompt))
            if deltas is not None:
                deltas.send(result.text)
            return result
        input_ids = torch.tensor([prompt], dtype=torch.long, device=self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "eos_token_id": stop,
            "pad_token_id": pad,
            "do_sample": sample,
        }
        if sample:
            kwargs["temperature"] = float(temperature or 1.0)
            kwargs["top_p"] = float(top_p) if top_p is not None else 1.0
            kwargs["top_k"] = 0
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if deltas is not None:
            kwargs["streamer"] = deltas
        # Seeding must not disturb the global RNG streams (the CUDA one too, when sampling there).
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            model: Any = entry.model
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        result = self._reply(entry, out[0, len(prompt) :].tolist(), stop, len(prompt))
        if deltas is not None:
            deltas.send(result.text)
        return result

    def generate_greedy_batch(
        self, model_ref: str | Path, items: list[BatchItem], *, before_step: BeforeStep | None = None
    ) -> list[GenerationResult]:
        """Greedy replies to several chats of one model in one left-padded batch (lean decoder or ``generate``).

        Each row gets what ``generate`` would give it alone: greedy decoding of a row does not depend on the
        others (padding is masked, positions start at each row's first token), and a row that wants fewer
        tokens is cut at its own limit. ``before_step`` runs before each step of the lean decoder.
        """
        entry = self._get(model_ref)
        stop, pad = self._stops(entry)
        prompts = [self._prompt(entry, i.messages, i.instructions, i.max_output_tokens) for i in items]
        if entry.decoder is not None:
            news = entry.decoder.greedy(
                [p for p, _ in prompts], [n for _, n in prompts], stop, pad, before_step=before_step
            )
            return [self._reply(entry, new, stop, len(p)) for new, (p, _) in zip(news, prompts, strict=True)]
        width = max(len(p) for p, _ in prompts)
        ids = torch.tensor(
            [[pad] * (width - len(p)) + p for p, _ in prompts], dtype=torch.long, device=self.device
        )
        mask = torch.tensor(
            [[0] * (width - len(p)) + [1] * len(p) for p, _ in prompts], dtype=torch.long, device=self.device
        )
        with torch.no_grad():
            model: Any = entry.model
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(n for _, n in prompts),
                eos_token_id=stop,
                pad_token_id=pad,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        results = []
        for row, (prompt, max_new) in enumerate(prompts):
            new = out[row, width : width + max_new].tolist()
            end = next((k for k, t in enumerate(new) if t in stop), None)
            results.append(self._reply(entry, new if end is None else new[: end + 1], stop, len(prompt)))
        return results

    def _prompt(
        self,
        entry: _Entry,
        messages: list[dict[str, Any]],
        instructions: str | None,
        max_output_tokens: int | None,
        truncate: bool = True,
    ) -> tuple[list[int], int]:
        """The prompt's token ids and how many new tokens it may get (``ContextTooLong`` when it must not be cut)."""
        chat = ([{"role": "system", "content": instructions}] if instructions else []) + list(messages)
        wanted = max(1, max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS)
        prompt = entry.fmt.encode_prompt(chat)
        # Stay within the context window; the prompt keeps at least half of it when both are long.
        keep = min(len(prompt), entry.max_seq_len - min(wanted, entry.max_seq_len // 2))
        if not truncate and keep < len(prompt):
            raise ContextTooLong(len(prompt), keep)
        return prompt[-keep:], min(wanted, entry.max_seq_len - keep)

    @staticmethod
    def _stops(entry: _Entry) -> tuple[list[int], int]:
        """End-of-turn token ids and the padding id."""
        tok = entry.fmt.tokenizer
        stop = [entry.fmt.end_token_id]
        if tok.eos_token_id is not None and tok.eos_token_id not in stop:
            stop.append(int(tok.eos_token_id))
        return stop, tok.pad_token_id if tok.pad_token_id is not None else stop[0]

    @staticmethod
    def _reply(entry: _Entry, new: list[int], stop: list[int], prompt_len: int) -> GenerationResult:
        """Decode generated ids (end-of-turn dropped); output_tokens counts the end token like the API does."""
        n_out = len(new)
        while new and new[-1] in stop:
            new.pop()
        text = str(entry.fmt.tokenizer.decode(new, skip_special_tokens=True)).strip()
        return GenerationResult(text=text, input_tokens=prompt_len, output_tokens=n_out)
