"""Throughput of our trainer vs Hugging Face `transformers.Trainer`, on CPU or CUDA (prints tables).

Usage: python bench/trainer_throughput.py [--device auto|cpu|cuda|cuda:N] [--model local:tiny-chat]
           [--batch-size 8 [32 ...]] [--steps 30] [--data datasets/customer-support/train.jsonl]
Both trainers get the same model, encoded examples (same chat template and loss mask), batch size, lr,
schedule and number of optimizer steps. On CUDA both use bf16 autocast over fp32 weights with TF32 matmuls
(ours: FTPIPE_TRAINER_DEVICE; Trainer: bf16=True). Tokens/s counts real (non-padding) tokens only; on CUDA the
clock starts and stops on a synchronised device. Needs only torch, transformers, peft, accelerate, tokenizers,
safetensors (the repo need not be installed: its root is put on sys.path).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _ensure_backend_importable() -> None:
    """Make `backend` importable from a plain checkout (the repo not installed). Not by putting the repo
    root on sys.path: its datasets/ folder would pass for the Hugging Face `datasets` package there."""
    if importlib.util.find_spec("backend") is not None:
        return
    pkg = Path(__file__).resolve().parents[1] / "backend"
    spec = importlib.util.spec_from_file_location(
        "backend", pkg / "__init__.py", submodule_search_locations=[str(pkg)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["backend"] = module
    spec.loader.exec_module(module)


_ensure_backend_importable()

from common import Row, add_common_args, row, write_rows  # noqa: E402

from backend.trainer.base_models import resolve_base_model  # noqa: E402
from backend.trainer.chat import ChatFormat  # noqa: E402
from backend.trainer.data import SFTExample, collate, load_examples  # noqa: E402
from backend.trainer.device import DEVICE_ENV, describe, prepare_device, resolve_device  # noqa: E402
from backend.trainer.generate import Generator  # noqa: E402
from backend.trainer.modeling import load_for_training  # noqa: E402
from backend.trainer.spec import TrainingSpec  # noqa: E402
from backend.trainer.train import GRAD_CLIP, WEIGHT_DECAY, configure_threads, train  # noqa: E402

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


CPU = torch.device("cpu")


def enough_data(data: Path, rows_needed: int, work: Path) -> Path:
    """`data`, or a copy repeated until it has `rows_needed` rows: the timed steps must not reach an epoch end
    (ours evaluates and writes a checkpoint there, which Trainer with save_strategy=no never does)."""
    lines = [line for line in data.read_text().splitlines() if line.strip()]
    if len(lines) >= rows_needed:
        return data
    out = work / f"{data.stem}-x{rows_needed}.jsonl"
    out.write_text("\n".join(lines[i % len(lines)] for i in range(rows_needed)) + "\n")
    return out


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock measures work done and not work queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _CancelAfter:
    """Callbacks that let exactly `steps` optimizer steps run, timing them (synchronising only at both ends)."""

    def __init__(self, steps: int | None, device: torch.device = CPU) -> None:
        self.steps = steps
        self.device = device
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
            _sync(self.device)
            self.t0 = time.perf_counter()
        self.calls += 1
        stop = self.steps is not None and self.calls > self.steps
        if stop:
            _sync(self.device)
        self.t1 = time.perf_counter()
        return "cancel" if stop else "continue"


def bench_ours(
    model: str, data: Path, steps: int, batch_size: int, device: torch.device, work: Path
) -> tuple[float, int]:
    """Seconds and real tokens for `steps` optimizer steps of our trainer."""
    cb = _CancelAfter(steps, device)
    spec = TrainingSpec("bench", model, data, None, work / "ours", n_epochs=50, batch_size=batch_size)
    out = train(spec, cb)  # type: ignore[arg-type]
    return cb.t1 - cb.t0, out.trained_tokens


def _sampler_args(arguments_cls: Any, group_by_length: bool) -> dict[str, Any]:
    """The sampler choice in whichever spelling this transformers version has (5.x or 4.x)."""
    if "train_sampling_strategy" in getattr(arguments_cls, "__dataclass_fields__", {}):
        return {"train_sampling_strategy": "group_by_length" if group_by_length else "random"}
    return {"group_by_length": group_by_length}


def bench_hf(
    model: str,
    data: Path,
    steps: int,
    batch_size: int,
    lr: float,
    group_by_length: bool,
    device: torch.device,
    work: Path,
) -> tuple[float, int]:
    """Seconds and real tokens for `steps` optimizer steps of transformers.Trainer on the same examples."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    base = resolve_base_model(model)
    loaded = load_for_training(base)
    fmt = ChatFormat(loaded.tokenizer, base.max_seq_len)
    examples, _ = load_examples(data, "supervised", fmt, "training_file")
    rows = [
        {"input_ids": e.input_ids, "loss_mask": e.loss_mask} for e in examples if isinstance(e, SFTExample)
    ]
    pad = int(loaded.tokenizer.pad_token_id or 0)
    batch_tokens: list[int] = []  # per collated batch, in order

    def collator(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        b = collate([SFTExample(f["input_ids"], f["loss_mask"]) for f in features], pad)
        batch_tokens.append(b.n_tokens)
        return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels}

    timing: dict[str, float] = {}

    class Timer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if "t0" not in timing:
                _sync(device)
                timing["t0"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step >= steps:
                _sync(device)
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
        use_cpu=device.type == "cpu",
        bf16=device.type == "cuda",
        dataloader_num_workers=0,
        **_sampler_args(TrainingArguments, group_by_length),
        remove_unused_columns=False,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=loaded.model, args=args, train_dataset=rows, data_collator=collator, callbacks=[Timer()]
    )  # type: ignore[arg-type]
    trainer.train()
    # One batch per optimizer step, in collation order; the loader may have collated one more ahead.
    return timing["t1"] - timing["t0"], sum(batch_tokens[:steps])


def main() -> None:
    """Run both trainers and the full sample job; print tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--model", default="local:tiny-chat", help="a base model name, as in a TrainingSpec")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[8], help="one table per batch size")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-full-job", action="store_true")
    add_common_args(ap)
    args = ap.parse_args()
    if args.quick:
        # Fewer steps, but still best of 2 interleaved: one 10-step run swung +-5% on a shared machine.
        args.steps, args.repeats, args.skip_full_job = 20, 2, True
    rows: list[Row] = []
    os.environ[DEVICE_ENV] = args.device  # our trainer and Generator read it
    device = resolve_device(args.device)
    if device.type == "cuda" and device.index not in (None, 0):
        # transformers.Trainer always takes the first visible GPU; use CUDA_VISIBLE_DEVICES instead.
        raise SystemExit("use CUDA_VISIBLE_DEVICES=N with --device cuda to bench another GPU")
    prepare_device(device)  # TF32 for both trainers: the switch is process-wide
    threads = configure_threads()
    with tempfile.TemporaryDirectory(prefix="ftpipe-bench-") as tmp:
        work = Path(tmp)
        data: Path = args.data
        source = str(data)
        if not data.is_file():
            data = work / "synthetic.jsonl"
            data.write_text("\n".join(json.dumps(r) for r in synthetic_support(300)) + "\n")
            source = "synthetic (300 support chats)"
        lr = resolve_base_model(args.model).base_learning_rate
        print(
            f"device: {describe(device)}; torch {torch.__version__}; torch threads {threads}\n"
            f"data: {source}; model: {args.model}; {args.steps} steps; lr {lr}; "
            f"precision: {'bf16 autocast, fp32 weights, TF32' if device.type == 'cuda' else 'fp32'}"
        )
        for batch_size in args.batch_size:
            rows.append(
                _bench_table(args.model, data, args.steps, batch_size, lr, args.repeats, device, work)
            )
        if not args.skip_full_job:
            cb = _CancelAfter(None)
            spec = TrainingSpec("sample", args.model, data, None, work / "full")
            t0 = time.perf_counter()
            out = train(spec, cb)  # type: ignore[arg-type]
            _sync(device)
            total = time.perf_counter() - t0
            losses = [
                d["train_loss"] for m, d in cb.events if d and "train_loss" in d and "valid_loss" not in d
            ]
            print(
                f"\nfull sample job on {describe(device)} (auto hyperparameters "
                f"{out.resolved_hyperparameters}): {total:.1f} s total, {out.trained_tokens} trained tokens; "
                f"train loss {losses[0]:.3f} -> {losses[-1]:.3f}"
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
    write_rows(args.json, rows)


def _bench_table(
    model: str,
    data: Path,
    steps: int,
    batch_size: int,
    lr: float,
    repeats: int,
    device: torch.device,
    work: Path,
) -> Row:
    """Time both trainers at one batch size (interleaved, best of `repeats`), print a table, return the row."""
    data = enough_data(data, (steps + 1) * batch_size, work)
    runs: dict[str, list[tuple[float, int]]] = {OURS: [], HF: [], HF_GROUPED: []}
    for _ in range(repeats):  # interleaved, best-of: the machine may be shared and noisy
        runs[OURS].append(bench_ours(model, data, steps, batch_size, device, work))
        runs[HF].append(bench_hf(model, data, steps, batch_size, lr, False, device, work))
        runs[HF_GROUPED].append(bench_hf(model, data, steps, batch_size, lr, True, device, work))
    results = [(name, *max(r, key=lambda x: x[1] / x[0])) for name, r in runs.items()]
    ours_tps = results[0][2] / results[0][1]
    print(f"\nbatch size {batch_size} on {device}:")
    print(f"{'trainer':<50} {'seconds':>8} {'real tokens':>12} {'tokens/s':>9} {'ours / this':>11}")
    for name, s, tok in results:
        tps = tok / s
        print(f"{name:<50} {s:>8.2f} {tok:>12d} {tps:>9.0f} {ours_tps / tps:>10.2f}x")
    best_hf = max(tok / s for name, s, tok in results[1:])  # the faster of the two Trainer set-ups
    return row(
        "trainer",
        f"tokens/s vs HF Trainer, {model}, batch {batch_size}, {device.type}",
        ours_tps,
        best_hf,
        direction=">=",
        limit=1.0,
        unit="tok/s",
        note=f"{steps} steps, best of {repeats}",
    )


if __name__ == "__main__":
    main()
