"""Deterministic byte-level BPE tokenizer for the built-in models, trained on the shipped corpus."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from backend.trainer.corpus import CORPUS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BOS = "<|endoftext|>"
PAD = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, IM_START, IM_END]

# ChatML template so that saved model dirs are usable by any HF tooling too.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tokenizer(vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the built-in corpus; the same inputs always give the same vocab."""
    # transformers is imported here, not at module load: resolving a model name (base_models, on every job
    # create, Responses call and price lookup) must not pay its import (seconds on a busy 2-core machine).
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeating the corpus makes rarer pairs clear min_frequency without changing merge order ties.
    tok.train_from_iterator([line for line in CORPUS.splitlines() if line.strip()] * 2, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.model_max_length = 4096
    return fast
