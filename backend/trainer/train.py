"""The training loop (CPU or CUDA): supervised (assistant-token cross-entropy) or DPO, with pause/resume/cancel.

Determinism: on CPU a paused-then-resumed run reproduces the uninterrupted one exactly (same seed, same
batches, same RNG, same arithmetic: fp32, or bf16 autocast on CPUs with bf16 units, see device.py). On CUDA
the same holds only within a tolerance (bf16 autocast and non-deterministic GPU kernels such as
index_add/atomics): losses agree to roughly 1e-2, not bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from backend.trainer.base_models import resolve_base_model
from backend.trainer.chat import ChatFormat
from backend.trainer.data import (
    Example,
    PreferenceExample,
    SFTExample,
    collate,
    epoch_batches,
    load_examples,
    pack,
)
from backend.trainer.device import (
    cpu_autocast,
    cpu_bf16,
    describe,
    prepare_device,
    resolve_device,
    restore_rng_state,
    rng_state,
    to_cpu,
)
from backend.trainer.hyperparams import Hyperparameters, resolve
from backend.trainer.losses import TokenStats, dpo_loss, sequence_logps, sft_loss
from backend.trainer.modeling import LoadedModel, load_for_training, load_trainable_state, save_model_dir
from backend.trainer.packing import packing_enabled, supports_packing
from backend.trainer.spec import TrainingCallbacks, TrainingError, TrainingOutcome, TrainingSpec
from backend.trainer.state import Progress, load_latest_state, save_state
from backend.trainer.threads import trainer_threads

VALID_SAMPLE_SIZE = 32
EVAL_BATCH_SIZE = 16
MAX_WARMUP_STEPS = 20
MIN_LR_FRACTION = 0.1
GRAD_CLIP = 1.0
WEIGHT_DECAY = 0.01


def configure_threads() -> int:
    """Set torch's intra-op threads to the trainer's share (``backend.trainer.threads.trainer_threads``)."""
    n = trainer_threads()
    torch.set_num_threads(n)
    return n


def lr_lambda_factory(total_steps: int) -> tuple[int, Any]:
    """Linear warmup then cosine decay to MIN_LR_FRACTION of the peak."""
    warmup = min(MAX_WARMUP_STEPS, max(1, total_steps // 10))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return warmup, factor


def _adamw(params: list[torch.nn.Parameter], lr: float) -> torch.optim.AdamW:
    """Fused AdamW (one kernel over all parameters, on CUDA and on the CPU: 3.4x faster than the foreach
    kernel for tiny-chat on the CPU), else the foreach kernel where this torch has no fused one."""
    try:
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=WEIGHT_DECAY, fused=True)
    except RuntimeError:
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=WEIGHT_DECAY, foreach=True)


@dataclass
class _Data:
    train: list[Example]
    valid_sample: list[Example]
    full_valid: list[Example]
    # DPO only: reference-model log-probs (chosen, rejected) keyed by id() of each example object.
    ref: dict[int, tuple[torch.Tensor, torch.Tensor]]


def _mean(window: list[float]) -> tuple[float, float]:
    loss_sum, correct, count = window
    return (loss_sum / count, correct / count) if count else (float("nan"), float("nan"))


class _Run:
    """One invocation of `train`: owns the model, optimizer and progress."""

    def __init__(self, spec: TrainingSpec, callbacks: TrainingCallbacks) -> None:
        self.spec = spec
        self.cb = callbacks
        configure_threads()
        self.device = resolve_device()
        prepare_device(self.device)
        torch.manual_seed(spec.seed)
        base = resolve_base_model(spec.base_model)
        self.cpu_bf16 = cpu_bf16(self.device)
        # bf16 compute (CUDA, or LoRA on a CPU with bf16 units): a LoRA model's frozen base is stored in bf16.
        bf16 = self.cpu_bf16 or self.device.type == "cuda"
        self.loaded: LoadedModel = load_for_training(base, torch.bfloat16 if bf16 else torch.float32)
        self.model = self.loaded.model.to(self.device)
        # Packed rows (no padding) where the model's attention can be kept inside each example, else padded.
        self.collate = pack if packing_enabled() and supports_packing(self.model) else collate
        tok = self.loaded.tokenizer
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else 0)
        fmt = ChatFormat(tok, base.max_seq_len)
        train_ex, skipped = load_examples(spec.training_file, spec.method, fmt, "training_file")
        if skipped:
            self.cb.on_event(
                f"Skipped {skipped} training examples with no trainable assistant tokens", level="warn"
            )
        if spec.validation_file is not None:
            valid_ex, _ = load_examples(spec.validation_file, spec.method, fmt, "validation_file")
        else:
            valid_ex = train_ex  # documented: without a validation file, valid_* metrics use training data
        self.data = _Data(train_ex, valid_ex[:VALID_SAMPLE_SIZE], valid_ex, {})
        self.hp: Hyperparameters = resolve(spec, len(train_ex), base.base_learning_rate)
        self.steps_per_epoch = math.ceil(len(train_ex) / self.hp.batch_size)
        self.total_steps = self.steps_per_epoch * self.hp.n_epochs
        if spec.max_steps is not None:
            self.total_steps = min(self.total_steps, spec.max_steps)
        if spec.method == "dpo":
            # Reference = the starting weights, computed before any resumed weights are loaded.
            for examples in (train_ex, valid_ex):
                chosen, rejected = self._reference_logps(examples)
                for i, ex in enumerate(examples):
                    self.data.ref[id(ex)] = (chosen[i], rejected[i])
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = _adamw(self.params, self.hp.learning_rate)
        self.warmup, factor = lr_lambda_factory(self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.progress = Progress()
        # Per-step (loss_sum, correct, count) not yet added to the progress windows: reading them each
        # step would make the host wait for the GPU, so they are read when a window is needed.
        self._pending: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        # (step, loss, accuracy) of the validation sample at the latest metrics event: an epoch ending at that
        # step (the job's last step always does) reuses it, the weights being the same (0.5 s on tiny-chat, CPU).
        self._valid_sample_at: tuple[int, float, float] | None = None

    # --- forward helpers ----------------------------------------------------------------------------------
    def _reference_logps(self, examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        chosen = torch.zeros(len(examples), device=self.device)
        rejected = torch.zeros(len(examples), device=self.device)
        model: Any = self.model
        ctx: Any = model.disable_adapter() if self.loaded.use_lora else torch.no_grad()
        with torch.no_grad(), ctx:
            for start in range(0, len(examples), EVAL_BATCH_SIZE):
                idx = list(range(start, min(len(examples), start + EVAL_BATCH_SIZE)))
                logps = self._pair_logps(examples, idx)
                chosen[idx] = logps[: len(idx)]
                rejected[idx] = logps[len(idx) :]
        return chosen, rejected

    def _pair_logps(self, examples: list[Example], idx: list[int]) -> torch.Tensor:
        pairs = [examples[i] for i in idx]
        assert all(isinstance(p, PreferenceExample) for p in pairs)
        seqs = [p.chosen for p in pairs if isinstance(p, PreferenceExample)]
        seqs += [p.rejected for p in pairs if isinstance(p, PreferenceExample)]
        with cpu_autocast(self.cpu_bf16):
            return sequence_logps(self.model, self.collate(seqs, self.pad_id), self.device)

    def _loss(self, examples: list[Example], idx: list[int]) -> tuple[torch.Tensor, TokenStats, int]:
        """Loss, metric stats and real-token count for a batch of example indices."""
        if self.spec.method == "dpo":
            logps = self._pair_logps(examples, idx)
            refs = [self.data.ref[id(examples[i])] for i in idx]
            ref_c = torch.stack([c for c, _ in refs])
            ref_r = torch.stack([r for _, r in refs])
            n = len(idx)
            loss, stats = dpo_loss(logps[:n], logps[n:], ref_c, ref_r, self.hp.beta)
            tokens = sum(examples[i].trained_tokens for i in idx)
            return loss, stats, tokens
        seqs = [examples[i] for i in idx]
        batch = self.collate([s for s in seqs if isinstance(s, SFTExample)], self.pad_id)
        with cpu_autocast(self.cpu_bf16):
            loss, stats = sft_loss(self.model, batch, self.device)
        return loss, stats, batch.n_tokens

    def evaluate(self, examples: list[Example]) -> tuple[float, float]:
        """Token-weighted loss and accuracy (pair-weighted for DPO) over `examples`."""
        self.model.eval()
        order = sorted(range(len(examples)), key=lambda i: examples[i].length)
        parts: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        with torch.no_grad():
            for start in range(0, len(order), EVAL_BATCH_SIZE):
                _, stats, _ = self._loss(examples, order[start : start + EVAL_BATCH_SIZE])
                parts.append((stats.loss_sum, stats.correct, stats.count))
        window = [0.0, 0.0, 0.0]
        for add in _read_stats(parts):
            window = [a + b for a, b in zip(window, add, strict=True)]
        self.model.train()
        return _mean(window)

    def _valid_sample(self) -> tuple[float, float]:
        """``evaluate`` on the validation sample, once per step."""
        step = self.progress.step
        if self._valid_sample_at is None or self._valid_sample_at[0] != step:
            self._valid_sample_at = (step, *self.evaluate(self.data.valid_sample))
        return self._valid_sample_at[1], self._valid_sample_at[2]

    # --- state --------------------------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        trainable = {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}
        tensors: dict[str, Any] = {"model": trainable, "optimizer": self.optimizer.state_dict()}
        if self.device.type != "cpu":
            tensors = to_cpu(tensors)  # a state written on a GPU must load on a machine without one
        return {
            **tensors,
            "scheduler": self.scheduler.state_dict(),
            **rng_state(self.device),
            "hp": [self.hp.n_epochs, self.hp.batch_size, self.hp.learning_rate_multiplier, self.hp.beta],
            "base_model": self.spec.base_model,
        }

    def try_resume(self) -> bool:
        """Load the latest resumable state if there is one; True when resumed."""
        found = load_latest_state(self.spec.output_dir)
        if found is None:
            return False
        payload, progress = found
        if payload.get("base_model") != self.spec.base_model:
            raise TrainingError(
                "resume_failed", "Resumable state was written for another base model", "model"
            )
        saved_hp = [float(x) for x in payload["hp"]]
        current_hp = [self.hp.n_epochs, self.hp.batch_size, self.hp.learning_rate_multiplier, self.hp.beta]
        if saved_hp != [float(x) for x in current_hp]:
            raise TrainingError("resume_failed", "Hyperparameters differ from the paused run", None)
        load_trainable_state(self.model, payload["model"])
        optimizer_state = payload["optimizer"]
        # A state may come from another device or an older version (foreach kernel): use this run's kernel
        # (set before loading, which places each moment and step counter where that kernel wants them).
        for group in optimizer_state["param_groups"]:
            group["fused"] = self.optimizer.param_groups[0]["fused"]
            group["foreach"] = self.optimizer.param_groups[0]["foreach"]
        self.optimizer.load_state_dict(optimizer_state)
        self.scheduler.load_state_dict(payload["scheduler"])
        restore_rng_state(payload, self.device)
        self.progress = progress
        return True

    # --- main loop ----------------------------------------------------------------------------------------
    def run(self) -> TrainingOutcome:
        spec, hp, p = self.spec, self.hp, self.progress
        resumed = spec.resume and self.try_resume()
        p = self.progress
        if resumed:
            self.cb.on_event(f"Resumed from step {p.step}", data={"step": p.step, "epoch": p.epoch + 1})
        else:
            self.cb.on_event(
                "Training started",
                data={
                    "n_examples": len(self.data.train),
                    "n_epochs": hp.n_epochs,
                    "batch_size": hp.batch_size,
                    "lr": hp.learning_rate,
                    "total_steps": self.total_steps,
                    "method": spec.method,
                    "device": describe(self.device),
                },
            )
        lengths = [e.length for e in self.data.train]
        every = max(1, spec.metrics_every_n_steps)
        self.model.train()
        while p.epoch < hp.n_epochs and not self._capped():
            batches = epoch_batches(lengths, hp.batch_size, spec.seed, p.epoch)
            while p.batch_in_epoch < len(batches) and not self._capped():
                signal = self.cb.control()
                if signal == "cancel":
                    self.cb.on_event(f"Cancelled at step {p.step}", data={"step": p.step})
                    return self._outcome("cancelled", None)
                if signal == "pause":
                    self._flush()
                    save_state(spec.output_dir, self._payload(), p)
                    self.cb.on_event(f"Paused at step {p.step}", data={"step": p.step})
                    return self._outcome("paused", None)
                self._step(batches[p.batch_in_epoch])
                # The last step always gets a point, so a curve never stops short of the end.
                if p.step % every == 0 or p.step == self.total_steps:
                    self._emit_metrics(len(batches))
            self._end_epoch()
        if self._capped():
            self.cb.on_event(f"Stopped at the {spec.max_steps}-step cap", data={"step": p.step})
        final_dir = spec.output_dir / "final"
        save_model_dir(self.loaded, final_dir)
        self.cb.on_event(
            f"Training completed: {p.step} steps, {p.trained_tokens} trained tokens",
            data={"step": p.step, "trained_tokens": p.trained_tokens},
        )
        return self._outcome("succeeded", final_dir)

    def _capped(self) -> bool:
        """True once the spec's max_steps cap is reached (the current epoch ends early, with a checkpoint)."""
        return self.spec.max_steps is not None and self.progress.step >= self.spec.max_steps

    def _step(self, idx: list[int]) -> None:
        p = self.progress
        loss, stats, tokens = self._loss(self.data.train, idx)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP, foreach=True)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._pending.append((stats.loss_sum, stats.correct, stats.count))
        if self.device.type == "cpu":
            self._flush()  # nothing to wait for on CPU; keeps the windows current as before
        p.trained_tokens += tokens
        p.step += 1
        p.batch_in_epoch += 1

    def _flush(self) -> None:
        """Add the pending per-step stats to the windows, in step order (the same sums as step by step)."""
        p = self.progress
        for add in _read_stats(self._pending):
            p.window = [a + b for a, b in zip(p.window, add, strict=True)]
            p.epoch_window = [a + b for a, b in zip(p.epoch_window, add, strict=True)]
        self._pending = []

    def _emit_metrics(self, batches_in_epoch: int) -> None:
        """train_* average the steps since the previous metrics event; valid_* the validation sample now."""
        self._flush()
        p = self.progress
        loss, acc = _mean(p.window)
        data: dict[str, Any] = {
            "step": p.step,
            "epoch": p.epoch + p.batch_in_epoch / batches_in_epoch,  # fractional, as Hugging Face logs it
            "train_loss": loss,
            "train_mean_token_accuracy": acc,
        }
        if self.spec.validation_file is not None:
            data["valid_loss"], data["valid_mean_token_accuracy"] = self._valid_sample()
        data["total_steps"] = self.total_steps
        data["learning_rate"] = self.scheduler.get_last_lr()[0]
        self.cb.on_event(
            f"Step {p.step}/{self.total_steps}: training loss={loss:.4f}", type="metrics", data=data
        )
        p.window = [0.0, 0.0, 0.0]

    def _end_epoch(self) -> None:
        self._flush()
        p = self.progress
        train_loss, train_acc = _mean(p.epoch_window)
        valid_loss, valid_acc = self._valid_sample()
        full_loss, full_acc = self.evaluate(self.data.full_valid)
        metrics = {
            "step": p.step,
            "train_loss": train_loss,
            "train_mean_token_accuracy": train_acc,
            "valid_loss": valid_loss,
            "valid_mean_token_accuracy": valid_acc,
            "full_valid_loss": full_loss,
            "full_valid_mean_token_accuracy": full_acc,
        }
        ckpt_dir = self.spec.output_dir / "checkpoints" / f"step-{p.step:06d}"
        save_model_dir(self.loaded, ckpt_dir)
        p.epoch += 1
        p.batch_in_epoch = 0
        p.epoch_window = [0.0, 0.0, 0.0]
        # A resumable state with every checkpoint, so a crashed worker can continue from here.
        save_state(self.spec.output_dir, self._payload(), p)
        self.cb.on_checkpoint(p.step, metrics, ckpt_dir)
        self.cb.on_event(
            f"Checkpoint saved at step {p.step} (epoch {p.epoch}/{self.hp.n_epochs})",
            data={**metrics, "epoch": p.epoch},  # no model_dir: events are read by API callers
        )

    def _outcome(self, status: Any, final_dir: Path | None) -> TrainingOutcome:
        return TrainingOutcome(
            status=status,
            trained_tokens=self.progress.trained_tokens,
            final_model_dir=final_dir,
            resolved_hyperparameters=self.hp.public(self.spec.method),
        )


def _read_stats(parts: list[tuple[torch.Tensor, torch.Tensor, int]]) -> list[list[float]]:
    """[loss_sum, correct, count] floats of each part, read from the device in one transfer."""
    if not parts:
        return []
    loss_sums = torch.stack([loss for loss, _, _ in parts]).tolist()
    corrects = torch.stack([c for _, c, _ in parts]).tolist()
    return [
        [float(ls), float(c), float(n)] for ls, c, (_, _, n) in zip(loss_sums, corrects, parts, strict=True)
    ]


def train(spec: TrainingSpec, callbacks: TrainingCallbacks) -> TrainingOutcome:
    """Run (or resume) one fine-tuning job to completion, pause or cancellation.

    Runs on $FTPIPE_TRAINER_DEVICE (auto: CUDA when available, else CPU; see device.py). Layout under spec.output_dir: checkpoints/step-NNNNNN/ (one per epoch), final/, state/ (latest
    resumable state). Without a validation file, valid_* use the first 32 training examples and
    full_valid_* the whole training set, so every checkpoint still carries all six metrics.
    """
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    return _Run(spec, callbacks).run()
