"""Greedy answers to an eval set, as the eval stage asks for them: HF generate vs the lean decoder.

Usage: python bench/eval_speed.py [--model local:tiny-chat [--model /path/to/fine-tuned/dir ...]]
           [--eval datasets/customer-support/eval.jsonl] [--batch 16] [--max-output-tokens 96] [--threads N] [--quick]
Both paths get the same batches: the prompts sorted by length (as tasks/evaluate.py sends them) in groups of
--batch (the eval concurrency; the backend answers concurrent greedy requests as one batch), through
``Generator(lean=False)`` (HF ``generate``) and ``Generator()`` (``backend.trainer.decode``). Tokens/s counts
generated tokens (the end token included, like the API's usage); answers must be identical. A built-in
base model has random weights, so every answer runs to the token limit; a fine-tuned model's answers end
by themselves, and finished rows leave the batch.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import Row, add_common_args, row, write_rows

from backend.trainer.generate import BatchItem, GenerationResult, Generator
from backend.trainer.threads import usable_cores
from evaluation.evalset import load_eval_file

DEFAULT_EVAL = Path(__file__).resolve().parents[1] / "datasets" / "customer-support" / "eval.jsonl"


def eval_items(path: Path, max_output_tokens: int, limit: int | None) -> list[BatchItem]:
    """The eval set's prompts, shortest first, as the eval stage sends them."""
    cases = load_eval_file(path).cases[:limit]
    chats = [[{"role": m.role, "content": m.content} for m in c.input_messages()] for c in cases]
    chats.sort(key=lambda chat: sum(len(m["content"]) for m in chat))
    return [BatchItem(chat, None, max_output_tokens) for chat in chats]


def answer(
    gen: Generator, model: str, items: list[BatchItem], batch: int
) -> tuple[list[GenerationResult], float]:
    """Every item's answer in batches of ``batch``; the wall time (model already loaded)."""
    gen._get(model)  # load outside the clock
    started = time.perf_counter()
    out: list[GenerationResult] = []
    for k in range(0, len(items), batch):
        out += gen.generate_greedy_batch(model, items[k : k + batch])
    return out, time.perf_counter() - started


def main() -> int:
    """Time both paths on each model; print a table; exit 1 when an answer differs."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", action="append", help="base name or model dir (repeatable); default local:tiny-chat"
    )
    ap.add_argument("--eval", type=Path, default=DEFAULT_EVAL, help="eval set (JSONL)")
    ap.add_argument("--batch", type=int, default=16, help="requests answered together (the eval concurrency)")
    ap.add_argument("--max-output-tokens", type=int, default=96)
    ap.add_argument(
        "--threads",
        type=int,
        default=usable_cores(),
        help="torch threads (default: every usable core, as the server answers on an otherwise idle machine)",
    )
    add_common_args(ap)
    args = ap.parse_args()
    models: list[str] = args.model or ["local:tiny-chat"]
    items = eval_items(args.eval, args.max_output_tokens, 32 if args.quick else None)
    load = os.getloadavg()
    print(
        f"{len(items)} prompts from {args.eval}, batches of {args.batch}, max {args.max_output_tokens} tokens,"
        f" {args.threads} torch thread(s)"
    )
    print("load average at start: " + " / ".join(f"{x:.2f}" for x in load) + " (1 / 5 / 15 min)")
    rows: list[Row] = []
    same_all = True
    hf, lean = Generator(cache_size=1, lean=False), Generator(cache_size=1)
    for gen in (hf, lean):
        gen.use_threads(args.threads)
    print(f"{'model':<40} {'path':<10} {'tokens':>7} {'seconds':>8} {'tokens/s':>9}")
    for model in models:
        timed = {}
        for name, gen in (("generate", hf), ("lean", lean)):
            results, seconds = answer(gen, model, items, args.batch)
            tokens = sum(r.output_tokens for r in results)
            timed[name] = (results, tokens / seconds)
            print(f"{model[-40:]:<40} {name:<10} {tokens:>7} {seconds:>8.2f} {tokens / seconds:>9.0f}")
        if lean._get(model).decoder is None:
            print(f"  {model}: the lean decoder does not mirror this model; both paths used generate")
        same = sum(a == b for a, b in zip(timed["generate"][0], timed["lean"][0], strict=True))
        same_all = same_all and same == len(items)
        print(
            f"  lean / generate: {timed['lean'][1] / timed['generate'][1]:.2f}x, identical answers {same}/{len(items)}"
        )
        label = Path(model).name if "/" in model else model
        note = f"{len(items)} prompts, batch {args.batch}, {args.threads} thread(s), load {load[0]:.1f}"
        rows.append(
            row("eval_speed", f"generate tokens/s ({label})", timed["generate"][1], unit="tok/s", note=note)
        )
        rows.append(
            row(
                "eval_speed",
                f"lean decoder tokens/s vs generate ({label})",
                timed["lean"][1],
                timed["generate"][1],
                direction=">=",
                limit=1.5,
                unit="tok/s",
                note=note,
            )
        )
        rows.append(
            row(
                "eval_speed",
                f"answers identical to generate ({label})",
                same / len(items),
                direction=">=",
                limit=1.0,
                note=f"{same}/{len(items)}",
            )
        )
    write_rows(args.json, rows)
    return 0 if same_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
