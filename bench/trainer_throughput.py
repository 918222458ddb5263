"""Throughput of our CPU trainer vs Hugging Face `transformers.Trainer` on local:tiny-chat (prints tables).

Usage: python bench/trainer_throughput.py [--data datasets/customer-support/train.jsonl] [--steps 30]
Both trainers get the same model, encoded examples (same chat template and loss mask), batch size, lr,
schedule and number of optimizer steps. Tokens/s counts real (non-padding) tokens only.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from backend.trainer.base_models import resolve_base_model
from backend.trainer.chat import ChatFormat
from backend.trainer.data import SFTExample, collate, load_examples
from backend.trainer.generate import Generator
from backend.trainer.modeling import load_for_training
from backend.trainer.spec import TrainingSpec
from backend.trainer.train import GRAD_CLIP, WEIGHT_DECAY, configure_threads, train

DEFAULT_DATA = Path("datasets/customer-support/train.jsonl")
OURS = "ours (length-bucketed, head on loss positions)"
HF = "transformers.Trainer (default sampler)"
HF_GROUPED = "transformers.Trainer (group_by_length)"

_ISSUES = [
    ("I forgot my password and can't log in", "reset your password"),
    ("my order hasn't arrived yet", "track your order"),
    ("I was charged twice this month", "billing issue"),
    ("the item I received is damaged", "damaged item"),
    ("I want to cancel my subscription", "cancel your subscription"),
    ("how do I change my shipping address", "update your address"),
    ("the app keeps crashing on my phone", "app crash"),
    ("can I get a refund for my last purchase", "refund"),
    ("my discount code doesn't work", "discount code"),
    ("I'd like to upgrade to the premium plan", "upgrade"),
]
_ANSWERS = {
    "reset your password": 'To reset your password, click "Forgot password" on the sign in page and follow the link '
    "we send to your email. If you don't see it, please check your spam folder.",
    "track your order": "I'm sorry for the wait. Your order {order} was shipped and should arrive within three to five "
    "business days. You can track it from the Orders page in your account.",
    "billing issue": "I apologize for the double charge on order {order}. I have refunded the duplicate payment; it "
    "will appear on your statement within five to ten business days.",
    "damaged item": "I'm so sorry your item arrived damaged. I have sent a free replacement for order {order}, and you "
    "don't need to return the damaged one.",
    "cancel your subscription": "You can cancel your subscription at any time from the Billing section of your "
    "settings. Your plan stays active until the end of the current billing period.",
    "update your address": "To update your shipping address, go to Settings, then Addresses, and click Edit. Orders "
    "that have already shipped cannot be changed.",
    "app crash": "Sorry about that! Please update the app to the latest version and restart your phone. If it still "
    "crashes, send us your device model and we will look into it.",
    "refund": "We offer a full refund within thirty days of purchase. Please return the item from order {order} in its "
    "original packaging and we will process your refund.",
    "discount code": "The discount code must be entered at checkout before you confirm the payment. Codes cannot be "
    "combined with other offers.",
    "upgrade": "I'd be glad to help you upgrade! The premium plan includes priority support and more storage. You can "
    "upgrade from the Billing section of your settings.",
}
_OPENERS = ["Hi,", "Hello,", "Hey there,", "Good morning,", ""]
_CLOSERS = [
    "Is there anything else I can help you with?",
    "Have a great day!",
    "Let me know if you need more help.",
]


def synthetic_support(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Synthetic customer-support chats (used when the sample dataset is not present)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        question, key = rng.choice(_ISSUES)
        order = f"#{rng.randint(10000, 99999)}"
        name = rng.choice(["Sam", "Maria", "Li", "Omar", "Anna", "John"])
        user = f"{rng.choice(_OPENERS)} {question}. My name is {name}, order {order}.".strip()
        answer = (
            f"Thanks for reaching out, {name}! "
            + _ANSWERS[key].format(order=order)
            + " "
            + rng.choice(_CLOSERS)
        )
        rows.append(
            {
                "messages": [
                    {
                        "role": "system",
                        "content": "You are a friendly customer support agent for Acme Store.",
                    },
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return rows


class _CancelAfter:
    """Callbacks that let exactly `steps` optimizer steps run, timing them."""

    def __init__(self, steps: int | None) -> None:
        self.steps = steps
        self.calls = 0
        self.t0 = 0.0
        self.t1 = 0.0
        self.events: list[tuple[str, dict | None]] = []

    def on_event(
        self, message: str, *, level: str = "info", type: str = "message", data: dict | None = None
    ) -> None:
        self.events.append((message, data))

    def on_checkpoint(self, step: int, metrics: dict[str, float], model_dir: Path) -> None:
        pass

    def control(self) -> str:
        if self.calls == 0:
            self.t0 = time.perf_counter()
        self.calls += 1
        self.t1 = time.perf_counter()
        if self.steps is not None and self.calls > self.steps:
            return "cancel"
        return "continue"


def bench_ours(data: Path, steps: int, batch_size: int, work: Path) -> tuple[float, int]:
    """Seconds and real tokens for `steps` optimizer steps of our trainer."""
    cb = _CancelAfter(steps)
    spec = TrainingSpec(
        "bench", "local:tiny-chat", data, None, work / "ours", n_epochs=50, batch_size=batch_size
    )
    out = train(spec, cb)  # type: ignore[arg-type]
    return cb.t1 - cb.t0, out.trained_tokens


def bench_hf(
    data: Path, steps: int, batch_size: int, lr: float, group_by_length: bool, work: Path
) -> tuple[float, int]:
    """Seconds and real tokens for `steps` optimizer steps of transformers.Trainer on the same examples."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    base = resolve_base_model("local:tiny-chat")
    loaded = load_for_training(base)
    fmt = ChatFormat(loaded.tokenizer, base.max_seq_len)
    examples, _ = load_examples(data, "supervised", fmt, "training_file")
    rows = [
        {"input_ids": e.input_ids, "loss_mask": e.loss_mask} for e in examples if isinstance(e, SFTExample)
    ]
    pad = int(loaded.tokenizer.pad_token_id or 0)
    counted = {"tokens": 0}

    def collator(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        b = collate([SFTExample(f["input_ids"], f["loss_mask"]) for f in features], pad)
        counted["tokens"] += b.n_tokens
        return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels}

    timing: dict[str, float] = {}

    class Timer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            timing.setdefault("t0", time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            timing["t1"] = time.perf_counter()

    warmup = min(20, max(1, steps // 10))
    args = TrainingArguments(
        output_dir=str(work / "hf"),
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        max_steps=steps,
        warmup_steps=warmup,
        lr_scheduler_type="cosine",
        weight_decay=WEIGHT_DECAY,
        adam_beta2=0.95,
        max_grad_norm=GRAD_CLIP,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        remove_unused_columns=False,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=loaded.model, args=args, train_dataset=rows, data_collator=collator, callbacks=[Timer()]
    )  # type: ignore[arg-type]
    trainer.train()
    # The first batch is collated before on_step_begin fires; all batches collated were trained on.
    return timing["t1"] - timing["t0"], counted["tokens"]


def main() -> None:
    """Run both trainers and the full sample job; print tables."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-full-job", action="store_true")
    args = ap.parse_args()
    threads = configure_threads()
    with tempfile.TemporaryDirectory(prefix="ftpipe-bench-") as tmp:
        work = Path(tmp)
        data: Path = args.data
        source = str(data)
        if not data.is_file():
            data = work / "synthetic.jsonl"
            data.write_text("\n".join(json.dumps(r) for r in synthetic_support(300)) + "\n")
            source = "synthetic (300 support chats)"
        lr = resolve_base_model("local:tiny-chat").base_learning_rate
        print(
            f"data: {source}; model: local:tiny-chat; batch size {args.batch_size}; {args.steps} steps; "
            f"lr {lr}; torch threads {threads}"
        )
        runs: dict[str, list[tuple[float, int]]] = {OURS: [], HF: [], HF_GROUPED: []}
        for _ in range(args.repeats):  # interleaved, best-of: the machine may be shared and noisy
            runs[OURS].append(bench_ours(data, args.steps, args.batch_size, work))
            runs[HF].append(bench_hf(data, args.steps, args.batch_size, lr, False, work))
            runs[HF_GROUPED].append(bench_hf(data, args.steps, args.batch_size, lr, True, work))
        results = [(name, *max(r, key=lambda x: x[1] / x[0])) for name, r in runs.items()]
        ours_s, ours_tok = results[0][1], results[0][2]
        ours_tps = ours_tok / ours_s
        print(f"\n{'trainer':<50} {'seconds':>8} {'real tokens':>12} {'tokens/s':>9} {'ours / this':>11}")
        for name, s, tok in results:
            tps = tok / s
            print(f"{name:<50} {s:>8.2f} {tok:>12d} {tps:>9.0f} {ours_tps / tps:>10.2f}x")
        if not args.skip_full_job:
            cb = _CancelAfter(None)
            spec = TrainingSpec("sample", "local:tiny-chat", data, None, work / "full")
            t0 = time.perf_counter()
            out = train(spec, cb)  # type: ignore[arg-type]
            total = time.perf_counter() - t0
            losses = [
                d["train_loss"] for m, d in cb.events if d and "train_loss" in d and "valid_loss" not in d
            ]
            print(
                f"\nfull sample job (auto hyperparameters {out.resolved_hyperparameters}): {total:.1f} s total, "
                f"{out.trained_tokens} trained tokens; train loss {losses[0]:.3f} -> {losses[-1]:.3f}"
            )
            assert out.final_model_dir is not None
            question = [
                {
                    "role": "user",
                    "content": "Hello, my order hasn't arrived yet. My name is Eva, order #55555.",
                }
            ]
            gen = Generator().generate(
                out.final_model_dir,
                question,
                instructions="You are a friendly customer support agent for Acme Store.",
                max_output_tokens=120,
                temperature=0,
            )
            print(f"sample answer ({gen.output_tokens} tokens): {gen.text}")


if __name__ == "__main__":
    main()
