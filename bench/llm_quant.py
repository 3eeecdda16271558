"""The bundled chat model re-quantized to llama.cpp's usual weight formats: size, perplexity and tokens/s.

    python bench/llm_quant.py                          # f16, q8_0, q4_k_m, q4_0; 10,000 tokens (~5 min, 1 thread)
    python bench/llm_quant.py --types q8_0,q6_k,q5_k_m --tokens 5000 --no-save

1. The source is the bundled SmolLM2-135M-Instruct GGUF (its format is read from the file and printed: Q4_1,
   with a Q8_0 token embedding). Every type is made from it by luodi.engines.requantize (cached), so f16 holds
   the source's own 4-bit values, not the original weights: it is the source's lossless reference, not a
   full-precision model, and q8_0 / q4_0 are a second rounding of the Q4_1 weights.
2. Perplexity on held-out DailyDialog text: the test split's dialogues that do not also occur in train (the
   corpus repeats 93 of them), utterances one per line, the corpus's spaces before punctuation and apostrophes
   removed; the first --tokens tokens, windows of --ctx tokens (luodi.engines.perplexity). DailyDialog is
   CC BY-NC-SA (research, non-commercial): it is read from LUODI_DATASETS and never stored in the repository.
3. Speed: a 512-token prompt in one batch and 128 greedily generated tokens, one stream, median of 3 runs. By
   default on 1 thread timed by its own CPU seconds (--clock cpu), so other processes on the machine do not
   change the ratios; --threads 2 --clock wall measures what a user waits on a quiet machine.
Stored in bench/results/llm_quant.json (record.py).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from record import machine, save

ROOT = Path(__file__).resolve().parents[1]
MODEL = "bundled:smollm2-135m-instruct"
TYPES = "f16,q8_0,q4_k_m,q4_0"


def datasets() -> Path:
    return Path(os.environ.get("LUODI_DATASETS", ROOT.parent / "shared" / "datasets"))


def plain(dialogue: str) -> str:
    """One DailyDialog line as ordinary text: an utterance per line, no space before punctuation."""
    lines = []
    for utt in dialogue.split("__eou__"):
        utt = re.sub(r"\s+([,.!?;:%])", r"\1", utt.strip())
        utt = re.sub(r"(\w) [’'] (\w)", r"\1'\2", utt)
        if utt:
            lines.append(utt)
    return "\n".join(lines)


def held_out_texts() -> list[str]:
    """DailyDialog's test dialogues that are not in its train split, as plain text."""
    base = datasets() / "dailydialog"
    test = base / "test" / "dialogues_test.txt"
    if not test.is_file():
        sys.exit(f"{test} not found: set LUODI_DATASETS to the folder that holds dailydialog/")
    train = set((base / "train" / "dialogues_train.txt").read_text(encoding="utf-8").splitlines())
    return [plain(line) for line in test.read_text(encoding="utf-8").splitlines() if line.strip() and line not in train]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--types", default=TYPES, help="comma-separated weight formats")
    ap.add_argument("--tokens", type=int, default=10_000, help="held-out tokens scored")
    ap.add_argument("--ctx", type=int, default=512, help="perplexity window")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    from luodi.engines.perplexity import gguf_type, quantize_report
    from luodi.models import resolve

    src = resolve(args.model)
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    texts = held_out_texts()
    source_type = gguf_type(src.path, args.threads)
    print(f"source: {Path(src.path).name} is {source_type}"
          + ("" if source_type == "f16" else f" (not f16: f16 and the other types are made from its {source_type} "
                                             "weights, so f16 is its lossless reference, not the original model)"))
    print(f"held-out text: {len(texts)} DailyDialog test dialogues not in train; {args.tokens} tokens scored, "
          f"windows of {args.ctx}; speed on {args.threads} thread(s), {args.clock} clock")
    started = time.perf_counter()
    rows = quantize_report(src.path, types, texts, max_tokens=args.tokens, n_ctx=args.ctx, threads=args.threads,
                           clock=args.clock, progress=lambda m: print(f"  {m}", flush=True))
    seconds = time.perf_counter() - started
    head = f"{'type':<14}{'MB':>8}{'perplexity':>12}{'Δ ppl':>9}{'prompt t/s':>12}{'gen t/s':>10}{'prompt ×':>10}" \
           f"{'gen ×':>8}"
    print(head)
    for r in rows:
        name = f"{r['type']} (source)" if r["source"] else r["type"]
        print(f"{name:<14}{r['file_mb']:>8.1f}{r['perplexity']:>12.3f}{r['ppl_delta_pct']:>+8.2f}%"
              f"{r['prompt_tok_s']:>12.1f}{r['gen_tok_s']:>10.1f}{r['prompt_ratio']:>10.2f}{r['gen_ratio']:>8.2f}")
    print(f"{rows[0]['tokens']} tokens scored per type; {seconds:.0f} s in all")
    command = "python bench/llm_quant.py" + "".join(
        f" --{k} {v}" for k, v, d in (("model", args.model, MODEL), ("types", args.types, TYPES),
                                      ("tokens", args.tokens, 10_000), ("ctx", args.ctx, 512),
                                      ("threads", args.threads, 1), ("clock", args.clock, "cpu")) if v != d)
    data = {
        "machine": machine(), "command": command, "model": args.model, "source_type": source_type,
        "text": {"dataset": "dailydialog/test (dialogues not in train)", "dialogues": len(texts),
                 "tokens": rows[0]["tokens"], "n_ctx": args.ctx},
        "speed": {"n_prompt": 512, "n_gen": 128, "repeats": 3, "threads": args.threads, "clock": args.clock},
        "rows": [{k: (Path(v).name if k == "path" else v) for k, v in r.items()} for r in rows],
        "seconds": round(seconds, 1),
    }
    if not args.no_save:
        print(f"stored in {save('llm_quant', data)}")


if __name__ == "__main__":
    main()
