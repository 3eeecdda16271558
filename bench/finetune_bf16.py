"""Fine-tune step time, float32 vs bfloat16 autocast (`model.options.finetune_bf16`), in one process.

    python bench/finetune_bf16.py [--source bundled:minilm-l6] [--batch 32] [--steps 20]

Times AdamW steps of the text-classification CosineClassifier on a batch of banking-style queries, alternating
float32 and bfloat16 rounds so machine load hits both alike, and prints each round and the speed-up ratio.
bfloat16 pays off on CPUs with AVX512-BF16 or AMX; where bf16 is emulated the ratio drops below 1.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from luodi.tasks.text_finetune import CosineClassifier

QUERIES = [
    "how do I activate my new card, it has not arrived yet",
    "why was I charged a fee for a transfer to my own account",
    "my top up failed twice today",
    "can I change my pin at an atm",
]


def step_seconds(model: CosineClassifier, batch: dict, y: torch.Tensor, opt, bf16: bool, steps: int) -> float:
    for i in range(steps + 3):  # 3 warm-up steps
        if i == 3:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="bundled:minilm-l6")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = CosineClassifier(args.source, n_classes=77).train()
    texts = [QUERIES[i % len(QUERIES)] for i in range(args.batch)]
    batch = model.tokenize(texts, max_length=64)
    y = torch.arange(args.batch) % 77
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for r in range(args.rounds):
        for name in times:
            t = step_seconds(model, batch, y, opt, name == "bfloat16", args.steps)
            times[name].append(t)
            print(f"round {r + 1} {name:8s} {t * 1000:7.1f} ms/step")
    fp32, bf16 = min(times["float32"]), min(times["bfloat16"])
    tokens = batch["input_ids"].shape[1]
    print(f"{args.source}, batch {args.batch} x {tokens} tokens, {torch.get_num_threads()} threads")
    print(f"float32 {fp32 * 1000:.1f} ms/step, bfloat16 autocast {bf16 * 1000:.1f} ms/step: {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
