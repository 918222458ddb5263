"""How many tokens a job will train on: the number it reports as ``trained_tokens`` and is billed for.

Embedded-backend models (``local:...``) are counted exactly as the trainer counts: the model's own tokenizer,
the same chat rendering and truncation (``backend.trainer.data.load_examples``), examples without
trainable tokens skipped, every token of each sequence (prompt included) once per epoch, and for DPO both
full sequences (prompt + preferred, prompt + non-preferred). ``n_epochs="auto"`` resolves with the same
rule the job applies (``contract.wire.auto_epochs`` of the examples kept).

Any other model is trained remotely with a tokenizer we do not have: its count is the validator's
heuristic (``validation.tokens``: characters / 4 plus per-message framing, capped at the token limit),
stated as approximate. On the sample dataset (datasets/customer-support, 3 epochs) it gives 78,447 tokens
where tiny-chat's 2,048-token BPE counts 118,374 (-34%); a large-vocabulary tokenizer splits English text
into fewer pieces than that small BPE, so against a hosted model the heuristic is closer, but not known.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from contract import wire

EMBEDDED_PREFIX = "local:"
Method = Literal["supervised", "dpo"]
Epochs = int | Literal["auto"]


class EstimateError(Exception):
    """The dataset or model cannot be estimated (a message a user can act on, naming file/line/field)."""


class TokenCount(BaseModel):
    """Trained tokens of one job, per epoch and in total, and how they were counted."""

    tokens: int = Field(description="Trained tokens over all epochs (what trained_tokens will report)")
    tokens_per_epoch: int
    n_epochs: int
    examples: int = Field(description="Examples trained on")
    skipped: int = Field(default=0, description="Examples with no trainable token (the trainer skips them)")
    at_limit: int = Field(default=0, description="Sequences cut at the model's length limit")
    exact: bool = Field(description="True: counted with the model's tokenizer as the trainer does")
    counter: str = Field(description="How: 'tokenizer <model>' or 'heuristic chars/4'")


def is_embedded_model(model: str) -> bool:
    """True for a model only the embedded backend trains (``local:tiny-chat``, ``local:/abs/dir``)."""
    return model.startswith(EMBEDDED_PREFIX)


def resolve_epochs(n_epochs: Epochs, examples: int) -> int:
    """The epoch count a job will use: the explicit number, else the wire's "auto" rule."""
    return wire.auto_epochs(examples) if n_epochs == wire.AUTO else int(n_epochs)


def count_tokens(train_path: Path, model: str, method: Method, n_epochs: Epochs) -> TokenCount:
    """Trained tokens for ``model`` on ``train_path`` (exact for embedded models, approximate otherwise)."""
    if is_embedded_model(model):
        return _remembered_exact_count(train_path, model, method, n_epochs)
    return count_with_heuristic(train_path, n_epochs)


# What an exact count depends on besides the file and the job's settings: the trainer's encoding code and the
# epochs rule. A change to any of them (an edit, another install) changes the cache key.
_COUNTING_CODE = (
    "backend/trainer/chat.py",
    "backend/trainer/data.py",
    "backend/trainer/base_models.py",
    "contract/wire.py",
)
TOKEN_COUNTS_FILE = "token-counts.json"
# The cache keeps the counts of this many most recently used (file, model, settings) triples: every edit of
# a dataset or of the counting code adds a key, and nothing else ever removes one.
TOKEN_COUNTS_KEEP = 200
_USED_AT = "used_at"


def _count_key(train_path: Path, model: str, method: Method, n_epochs: Epochs) -> str | None:
    import hashlib

    if "/" in model.removeprefix(EMBEDDED_PREFIX):
        return None  # a model folder on disk can change under the same name: always counted afresh
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for rel in _COUNTING_CODE:
        st = (root / rel).stat()
        digest.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode())
    digest.update(f"{model};{method};{n_epochs};".encode())
    with open(train_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remembered_exact_count(train_path: Path, model: str, method: Method, n_epochs: Epochs) -> TokenCount:
    """``count_with_trainer``, remembered in the state dir: a re-run of the same job skips loading
    ``transformers`` and the tokenizer (seconds), and gets the same exact count."""
    from tasks.state import JsonIndex, default_state_dir

    try:
        key = _count_key(train_path, model, method, n_epochs)
    except OSError:
        key = None  # unreadable file or code: counting reports the real problem
    import contextlib

    index = JsonIndex(default_state_dir() / TOKEN_COUNTS_FILE)
    cached = index.get(key) if key is not None else None
    count: TokenCount | None = None
    if isinstance(cached, dict):
        with contextlib.suppress(ValueError):  # an entry of an older shape: count again
            count = TokenCount.model_validate(cached)
    if count is None:
        count = count_with_trainer(train_path, model, method, n_epochs)
    if key is not None:
        with contextlib.suppress(OSError):  # a read-only state dir only costs the next run the count
            index.update(_remember(key, count))
    return count


def _remember(key: str, count: TokenCount) -> Callable[[dict[str, Any]], None]:
    """The cache change for a count just used: stamped now, and the least recently used beyond the bound
    dropped (an entry without a stamp, from an older version, counts as the oldest)."""
    import time

    def change(entries: dict[str, Any]) -> None:
        entries[key] = {**count.model_dump(), _USED_AT: time.time()}
        if len(entries) > TOKEN_COUNTS_KEEP:

            def used_at(k: str) -> float:
                stamp = entries[k].get(_USED_AT) if isinstance(entries[k], dict) else None
                return float(stamp) if isinstance(stamp, int | float) else 0.0

            for stale in sorted(entries, key=used_at)[: len(entries) - TOKEN_COUNTS_KEEP]:
                del entries[stale]

    return change


def count_with_trainer(train_path: Path, model: str, method: Method, n_epochs: Epochs) -> TokenCount:
    """Encode the file as the embedded trainer does and count what it will process."""
    # Lazy: transformers and the trainer's encoders load only when an estimate is actually made.
    from backend.trainer.base_models import training_tokenizer
    from backend.trainer.chat import ChatFormat
    from backend.trainer.data import PreferenceExample, load_examples
    from backend.trainer.spec import TrainingError

    try:
        tokenizer, max_seq_len = training_tokenizer(model)
        examples, skipped = load_examples(
            train_path, method, ChatFormat(tokenizer, max_seq_len), "training_file"
        )
    except TrainingError as exc:
        raise EstimateError(exc.message) from exc
    per_epoch = sum(e.trained_tokens for e in examples)
    at_limit = sum(
        (e.chosen.length >= max_seq_len) + (e.rejected.length >= max_seq_len)
        if isinstance(e, PreferenceExample)
        else e.length >= max_seq_len
        for e in examples
    )
    epochs = resolve_epochs(n_epochs, len(examples))
    return TokenCount(
        tokens=per_epoch * epochs,
        tokens_per_epoch=per_epoch,
        n_epochs=epochs,
        examples=len(examples),
        skipped=skipped,
        at_limit=int(at_limit),
        exact=True,
        counter=f"tokenizer of {model}",
    )


def count_with_heuristic(train_path: Path, n_epochs: Epochs) -> TokenCount:
    """The validator's chars/4 estimate (see the module docstring for its error on the sample)."""
    from validation import validate_file

    report = validate_file(train_path)
    if not report.ok:
        first = report.errors[0] if report.errors else "invalid file"
        raise EstimateError(f"cannot estimate an invalid dataset: {first}")
    stats = report.stats
    epochs = resolve_epochs(n_epochs, stats.examples)
    return TokenCount(
        tokens=stats.billable_tokens_per_epoch * epochs,
        tokens_per_epoch=stats.billable_tokens_per_epoch,
        n_epochs=epochs,
        examples=stats.examples,
        at_limit=stats.examples_over_limit,
        exact=False,
        counter="heuristic: characters/4 + 4 per message (approximate)",
    )
