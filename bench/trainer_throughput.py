"""Throughput of our trainer vs Hugging Face `transformers.Trainer` set-ups, on CPU or CUDA (prints tables).

Usage: python bench/trainer_throughput.py [--device auto|cpu|cuda|cuda:N] [--model local:tiny-chat]
           [--batch-size 8 [32 ...]] [--steps 30] [--skip 1] [--data datasets/customer-support/train.jsonl]
       python bench/trainer_throughput.py --model random:qwen2-0.5b --batch-size 4 --steps 3 --skip 1
Every trainer gets the same model (a LoRA model: the same LoRA), encoded examples (same chat template and
loss mask), batch size, lr, schedule and number of optimizer steps; Trainer runs with group_by_length and
with padding-free packing (DataCollatorWithFlattening, which transformers turns into attention kept inside
each example). On CUDA all use bf16 autocast with TF32 matmuls (a LoRA model's frozen base in bf16); on a CPU
with bf16 units Trainer runs in bf16 too (ours does by default there). Tokens/s counts real (non-padding)
tokens of the timed steps only (the first --skip steps warm up); on CUDA the clock starts and stops on a
synchronised device, and MFU = 6 x params x tokens/s over the device's dense bf16 peak. Needs only torch, transformers, peft, accelerate, tokenizers, safetensors (the repo
need not be installed: its backend package is loaded from this checkout).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
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

from backend.trainer.base_models import default_cache_dir, resolve_base_model, training_tokenizer  # noqa: E402
from backend.trainer.chat import ChatFormat  # noqa: E402
from backend.trainer.data import SFTExample, collate, epoch_batches, load_examples  # noqa: E402
from backend.trainer.device import (  # noqa: E402
    DEVICE_ENV,
    cpu_bf16,
    cpu_has_bf16_units,
    describe,
    prepare_device,
    resolve_device,
)
from backend.trainer.generate import Generator  # noqa: E402
from backend.trainer.modeling import load_for_training  # noqa: E402
from backend.trainer.packing import packing_enabled  # noqa: E402
from backend.trainer.spec import TrainingSpec  # noqa: E402
from backend.trainer.tokenizer import build_tokenizer  # noqa: E402
from backend.trainer.train import GRAD_CLIP, WEIGHT_DECAY, configure_threads, train  # noqa: E402

DEFAULT_DATA = Path("datasets/customer-support/train.jsonl")
OURS = "ours (packed rows, head on loss positions, fused AdamW)"

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
RANDOM_QWEN = "random:qwen2-0.5b"


def random_qwen_dir() -> Path:
    """A Qwen2-0.5B-shaped model (494M parameters, Qwen2.5-0.5B's config) with seeded random weights and the
    built-in byte-level tokenizer, built once into the base-model cache (nothing is downloaded)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    target = default_cache_dir() / "bench-qwen2-0.5b-random-v1"
    if (target / "config.json").is_file():
        return target
    tok = build_tokenizer()
    config = Qwen2Config(
        vocab_size=151_936,  # Qwen's embedding size; the tokenizer uses the first ids only
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32_768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Qwen2ForCausalLM(config).save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(target)
    return target


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
    """Callbacks that let exactly `steps` optimizer steps run, timing all but the first `skip` of them
    (synchronising only at both ends of the clock), in wall and in this process's CPU time."""

    def __init__(self, steps: int | None, device: torch.device = CPU, skip: int = 0) -> None:
        self.steps = steps
        self.device = device
        self.skip = skip
        self.calls = 0
        self.t0 = 0.0
        self.t1 = 0.0
        self.c0 = 0.0
        self.c1 = 0.0
        self.events: list[tuple[str, dict | None]] = []

    def on_event(
        self, message: str, *, level: str = "info", type: str = "message", data: dict | None = None
    ) -> None:
        self.events.append((message, data))

    def on_checkpoint(self, step: int, metrics: dict[str, float], model_dir: Path) -> None:
        pass

    def control(self) -> str:
        if self.calls == self.skip:
            _sync(self.device)
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        self.calls += 1
        stop = self.steps is not None and self.calls > self.steps
        if stop:
            _sync(self.device)
        self.t1, self.c1 = time.perf_counter(), time.process_time()
        return "cancel" if stop else "continue"


def bench_ours(
    model: str, data: Path, steps: int, batch_size: int, device: torch.device, work: Path, skip: int = 0
) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and real tokens for the last `steps - skip` of `steps` optimizer steps of our
    trainer."""
    cb = _CancelAfter(steps, device, skip)
    spec = TrainingSpec("bench", model, data, None, work / "ours", n_epochs=50, batch_size=batch_size, seed=0)
    out = train(spec, cb)  # type: ignore[arg-type]
    tokens = out.trained_tokens - first_steps_tokens(model, data, batch_size, skip)
    return cb.t1 - cb.t0, cb.c1 - cb.c0, tokens


def first_steps_tokens(model: str, data: Path, batch_size: int, steps: int) -> int:
    """Real tokens in our trainer's first `steps` batches (seed 0, epoch 0), as it batches them."""
    if steps == 0:
        return 0
    tokenizer, max_len = training_tokenizer(model)
    examples, _ = load_examples(data, "supervised", ChatFormat(tokenizer, max_len), "training_file")
    lengths = [e.length for e in examples]
    return sum(lengths[i] for batch in epoch_batches(lengths, batch_size, 0, 0)[:steps] for i in batch)


def _sampler_args(arguments_cls: Any, group_by_length: bool) -> dict[str, Any]:
    """The sampler choice in whichever spelling this transformers version has (5.x or 4.x)."""
    if "train_sampling_strategy" in getattr(arguments_cls, "__dataclass_fields__", {}):
        return {"train_sampling_strategy": "group_by_length" if group_by_length else "random"}
    return {"group_by_length": group_by_length}


@dataclass(frozen=True)
class HFSetup:
    """One way of running transformers.Trainer on the same work."""

    name: str
    group_by_length: bool = True
    padding_free: bool = False  # DataCollatorWithFlattening: one row, position ids, no padding
    bf16: bool = False  # bf16=True (autocast); a LoRA model's frozen base is loaded in bf16 as well


HF_GROUPED = HFSetup("transformers.Trainer (group_by_length)")
HF_FLAT = HFSetup("transformers.Trainer (padding-free packing)", group_by_length=False, padding_free=True)
HF_GROUPED_BF16 = HFSetup("transformers.Trainer (group_by_length, bf16)", bf16=True)
HF_FLAT_BF16 = HFSetup(
    "transformers.Trainer (padding-free packing, bf16)", group_by_length=False, padding_free=True, bf16=True
)


def bench_hf(
    model: str,
    data: Path,
    steps: int,
    batch_size: int,
    lr: float,
    setup: HFSetup,
    device: torch.device,
    work: Path,
    skip: int = 0,
) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and real tokens for the last `steps - skip` of `steps` optimizer steps of
    transformers.Trainer on the same examples (same encoding and loss mask, same LoRA for a LoRA model)."""
    from transformers import DataCollatorWithFlattening, Trainer, TrainerCallback, TrainingArguments

    base = resolve_base_model(model)
    bf16_base = setup.bf16 or device.type == "cuda"
    loaded = load_for_training(base, torch.bfloat16 if bf16_base else torch.float32)
    fmt = ChatFormat(loaded.tokenizer, base.max_seq_len)
    examples, _ = load_examples(data, "supervised", fmt, "training_file")
    rows = [
        {"input_ids": e.input_ids, "loss_mask": e.loss_mask} for e in examples if isinstance(e, SFTExample)
    ]
    pad = int(loaded.tokenizer.pad_token_id or 0)
    batch_tokens: list[int] = []  # per collated batch, in order
    flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)

    def collator(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs = [SFTExample(f["input_ids"], f["loss_mask"]) for f in features]
        batch_tokens.append(sum(x.length for x in seqs))
        if setup.padding_free:
            # transformers sees the restarting position ids and keeps attention inside each example.
            labelled = [
                {
                    "input_ids": x.input_ids,
                    "labels": [t if m else -100 for t, m in zip(x.input_ids, x.loss_mask, strict=True)],
                }
                for x in seqs
            ]
            return dict(flatten(labelled, return_tensors="pt"))
        b = collate(seqs, pad)
        return {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels}

    timing: dict[str, float] = {}

    class Timer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if "t0" not in timing and state.global_step >= skip:
                _sync(device)
                timing["t0"], timing["c0"] = time.perf_counter(), time.process_time()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step >= steps:
                _sync(device)
            timing["t1"], timing["c1"] = time.perf_counter(), time.process_time()

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
        bf16=setup.bf16 or device.type == "cuda",
        dataloader_num_workers=0,
        **_sampler_args(TrainingArguments, setup.group_by_length),
        remove_unused_columns=False,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=loaded.model, args=args, train_dataset=rows, data_collator=collator, callbacks=[Timer()]
    )  # type: ignore[arg-type]
    trainer.train()
    # One batch per optimizer step, in collation order; the loader may have collated one more ahead.
    cpu = timing["c1"] - timing["c0"]
    return timing["t1"] - timing["t0"], cpu, sum(batch_tokens[skip:steps])


def main() -> None:
    """Run both trainers and the full sample job; print tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument(
        "--model",
        default="local:tiny-chat",
        help=f"a base model name, as in a TrainingSpec, or {RANDOM_QWEN} (built here with random weights)",
    )
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[8], help="one table per batch size")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip", type=int, default=0, help="untimed first steps (warm-up), of --steps")
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
        label = args.model
        if args.model == RANDOM_QWEN:
            args.model = f"local:{random_qwen_dir()}"
        base = resolve_base_model(args.model)
        lr = base.base_learning_rate
        ours_precision = "fp32"
        if device.type == "cuda":
            ours_precision = "bf16 autocast, fp32 weights, TF32" + (
                ", bf16 frozen base" if base.use_lora else ""
            )
        elif cpu_bf16(device):
            ours_precision = "bf16 autocast (CPU with bf16 units), fp32 attention" + (
                ", bf16 frozen base" if base.use_lora else ""
            )
        print(
            f"device: {describe(device)}; torch {torch.__version__}; torch threads {threads}\n"
            f"data: {source}; model: {label}{' + LoRA' if base.use_lora else ''}; {args.steps} steps "
            f"({args.skip} untimed); lr {lr}; ours: {ours_precision}, packing "
            f"{'on' if packing_enabled() else 'off'}"
        )
        for batch_size in args.batch_size:
            rows += _bench_table(
                args.model, data, args.steps, batch_size, lr, args.repeats, device, work, args.skip, label
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


# Dense bf16 peak FLOP/s (no sparsity), for MFU = 6 x params x tokens/s / peak; matched on the device name.
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
)


def peak_bf16_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak from the table above, or None (CPU, or a GPU not in the table)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def hf_setups(model: str, device: torch.device) -> list[HFSetup]:
    """The Trainer set-ups to run against ours: the sampler choices and the padding-free collator, plus
    bf16 for a LoRA model on a CPU with bf16 units (there the strongest HF set-up is a bf16 one)."""
    bf16_units = device.type == "cpu" and cpu_has_bf16_units()
    if resolve_base_model(model).kind == "builtin":
        # The default sampler is left out: always slower than group_by_length (docs/performance.md). On a CPU
        # with bf16 units ours trains under bf16 autocast, so Trainer's bf16 run is measured too.
        return [HF_GROUPED, HF_FLAT] + ([HF_GROUPED_BF16] if bf16_units else [])
    if bf16_units:
        # fp32 Trainer is left out here: 1.4-1.9x slower than its bf16 run on a 0.5B model (docs/performance.md)
        return [HF_GROUPED_BF16, HF_FLAT_BF16]
    return [HF_GROUPED, HF_FLAT]


def targets(model: str, device: torch.device) -> tuple[float, float]:
    """(target vs group_by_length, target vs the best HF set-up) from issue 17."""
    builtin = resolve_base_model(model).kind == "builtin"
    if device.type == "cpu":
        return (1.5, 1.0) if builtin else (1.0, 1.2)
    return (1.0, 1.2) if builtin else (1.0, 1.3)


def _bench_table(
    model: str,
    data: Path,
    steps: int,
    batch_size: int,
    lr: float,
    repeats: int,
    device: torch.device,
    work: Path,
    skip: int = 0,
    label: str | None = None,
) -> list[Row]:
    """Time ours and each HF set-up at one batch size (interleaved, best of `repeats`), print a table,
    return the rows: vs group_by_length, vs the best HF set-up, and MFU on a GPU."""
    data = enough_data(data, (steps + 1) * batch_size, work)
    setups = hf_setups(model, device)
    runs: dict[str, list[tuple[float, float, int]]] = {OURS: [], **{h.name: [] for h in setups}}
    for _ in range(repeats):  # interleaved, best-of: the machine may be shared and noisy
        runs[OURS].append(bench_ours(model, data, steps, batch_size, device, work, skip))
        gc.collect()
        for h in setups:
            runs[h.name].append(bench_hf(model, data, steps, batch_size, lr, h, device, work, skip))
            gc.collect()
    results = [(name, *max(r, key=lambda x: x[2] / x[0])) for name, r in runs.items()]
    ours_tps = results[0][3] / results[0][1]
    # On the CPU, also tokens per CPU-second (each trainer's best of its runs): a busy machine takes wall time
    # from whichever trainer it happens to preempt, CPU time far less, so the two ratios side by side say
    # whether a wall-time ratio is the trainers' or the machine's.
    cpu_tps = {name: max(tok / cpu for _, cpu, tok in r) for name, r in runs.items()}
    on_cpu = device.type == "cpu"
    label = label or model
    params = _n_params(model)
    peak = peak_bf16_flops(device)
    print(f"\n{label}, batch size {batch_size} on {describe(device)} ({steps - skip} timed steps):")
    head = f"{'trainer':<52} {'seconds':>8} {'real tokens':>12} {'tokens/s':>9} {'ours / this':>11}"
    head += f" {'tok/CPU-s':>9} {'ours / this':>11}" if on_cpu else ""
    print(head + (f" {'MFU':>6}" if peak else ""))
    for name, sec, _cpu, tok in results:
        tps = tok / sec
        mfu = f" {6 * params * tps / peak:>6.1%}" if peak else ""
        by_cpu = f" {cpu_tps[name]:>9.0f} {cpu_tps[OURS] / cpu_tps[name]:>10.2f}x" if on_cpu else ""
        print(f"{name:<52} {sec:>8.2f} {tok:>12d} {tps:>9.0f} {ours_tps / tps:>10.2f}x{by_cpu}{mfu}")
    by_name = {name: tok / sec for name, sec, _, tok in results}
    best_name, best_hf = max(((n, t) for n, t in by_name.items() if n != OURS), key=lambda x: x[1])
    grouped = max(t for n, t in by_name.items() if n.startswith(HF_GROUPED.name.rstrip(")")))
    vs_grouped, vs_best = targets(model, device)
    note = f"{steps - skip} timed steps, best of {repeats}"
    if on_cpu:
        grouped_cpu = max(t for n, t in cpu_tps.items() if n.startswith(HF_GROUPED.name.rstrip(")")))
        note += f"; per CPU-second {cpu_tps[OURS] / grouped_cpu:.2f}x"
    out = [
        row(
            "trainer",
            f"real tokens/s vs Trainer group_by_length, {label}, batch {batch_size}, {device.type}",
            ours_tps,
            grouped,
            direction=">=",
            limit=vs_grouped,
            unit="tok/s",
            note=note,
        ),
        row(
            "trainer",
            f"real tokens/s vs best HF set-up, {label}, batch {batch_size}, {device.type}",
            ours_tps,
            best_hf,
            direction=">=",
            limit=vs_best,
            unit="tok/s",
            note=f"best: {best_name}",
        ),
    ]
    if peak:
        out.append(
            row(
                "trainer",
                f"MFU (6 x {params / 1e6:.0f}M params x tokens/s / bf16 peak), {label}, batch {batch_size}",
                6 * params * ours_tps / peak,
                6 * params * best_hf / peak,
                note=f"peak {peak / 1e12:.0f} TFLOP/s",
            )
        )
    return out


def _n_params(model: str) -> int:
    """Parameters of the base model (the frozen base included, for a LoRA model), read from its files."""
    from safetensors import safe_open

    path = resolve_base_model(model).path
    total = 0
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open handles are not iterable
                total += _prod(st.get_slice(key).get_shape())
    return total


def _prod(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    main()
