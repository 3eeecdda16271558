"""Robustness of text and speech apps: word substitution on banking-intents, waveform attacks on spoken digits.

    python bench/robustness_text.py [--texts 300] [--eps 0.1] [--speech-eps 0.01] [--attack pgd] [--steps 20]
                                    [--recordings 500] [--speech-apps A,B] [--skip-text] [--skip-speech] [--home DIR]

Text: banking-intents (examples/banking-intents.yaml) with its frozen-encoder and TF-IDF heads (the fine-tuned
head takes hours of CPU, as in bench/explain.py), attacked as a black box by budgeted greedy word substitution
(luodi.audit.robustness.text_numbers) on the first `--texts` validation texts: accuracy against the share of
words changed, the sentence similarity of the attacked texts, examples.
Speech: spoken-digits-cnn (white-box through the log-mel path rebuilt in torch) and spoken-digits (pretrained
ONNX embedding: transfer attack from a surrogate log-mel CNN) on the held-out speaker's recordings, ART FGSM/PGD
with eps in units of each recording's peak amplitude (luodi.audit.robustness.speech_numbers).
The issue sets no numeric goal for text or speech robustness: the goals list records measured values with
"target": null and "met": null. Apps are trained first unless a finished run exists under --home (LUODI_HOME;
default a temporary folder). Needs the shared datasets (LUODI_DATASETS). Writes bench/results/robustness_text.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_APP = ROOT / "examples" / "banking-intents.yaml"
TEXT_OVERRIDES = {  # as bench/explain.py: the frozen-encoder head and TF-IDF, no fine-tuning on a CPU
    "model.options.features": ["embeddings", "tfidf"],
    "model.options.head_weights": {"embeddings": 0.85, "tfidf": 0.15},
}
SPEECH_APPS = {
    "spoken-digits-cnn": ROOT / "examples" / "spoken-digits-cnn.yaml",
    "spoken-digits": ROOT / "examples" / "spoken-digits.yaml",
}


def ensure_trained(name: str, path: Path, overrides: dict | None = None) -> None:
    from luodi import api
    from luodi.apps import registry

    if name not in registry.apps_with_runs():
        print(f"training {name} ...", flush=True)
        t = time.perf_counter()
        api.train(path, progress=False, overrides=overrides or {})
        print(f"  trained in {time.perf_counter() - t:.0f} s", flush=True)


def text_part(n: int, eps: float) -> dict:
    from luodi import api
    from luodi.audit.robustness import text_numbers

    ensure_trained("banking-intents", TEXT_APP, TEXT_OVERRIDES)
    task = api.load_predictor("banking-intents").task
    _, valid = task.split(task.read(None))
    t = time.perf_counter()
    out = text_numbers(task, valid, eps, max_rows=n)
    out["wall_seconds"] = round(time.perf_counter() - t, 1)
    sim = out["similarity"]
    print(
        f"banking-intents (embeddings + tfidf heads): word substitution on {out['n']} validation texts "
        f"({out['queries']} queries, {out['cpu_seconds']} CPU-s, {out['wall_seconds']} s wall under load)"
    )
    for r in out["curve"]:
        print(
            f"  budget {r['eps']:.2f} of the words: accuracy {r['accuracy']:.4f} "
            f"(mean share changed {r['mean_changed_share']:.3f})"
        )
    print(
        f"  similarity of attacked texts (n {sim['n']}): mean {sim['mean']:.3f}, p10 {sim['p10']:.3f}, "
        f"min {sim['min']:.3f}"
    )
    for ex in out["examples"]:
        print(f"  {ex['label']} -> {ex['attacked_label']}: {ex['attacked']} ({ex['changed']}, sim {ex['similarity']})")
    return out


def speech_part(name: str, attack: str, eps: float, rows: int, steps: int) -> dict:
    from luodi import api
    from luodi.audit.robustness import speech_numbers

    ensure_trained(name, SPEECH_APPS[name])
    task = api.load_predictor(name).task
    train, valid = task.split(task.read(None))
    t = time.perf_counter()
    c = time.process_time()
    out = speech_numbers(task, train, valid, attack, eps, max_rows=rows, steps=steps)
    out["wall_seconds"], out["cpu_seconds"] = round(time.perf_counter() - t, 1), round(time.process_time() - c, 1)
    print(
        f"{name}: {attack.upper()} on the waveform, {out['n']} held-out recordings "
        f"({out['cpu_seconds']} CPU-s, {out['wall_seconds']} s wall under load); attacked: {out['attacked']}"
    )
    for r in out["curve"]:
        snr = "" if r["snr_db"] is None else f", SNR {r['snr_db']:.1f} dB"
        print(
            f"  eps {r['eps']:g} of the peak: served accuracy {r['accuracy']:.4f} "
            f"(crafted-on model {r['crafted_on_accuracy']:.4f}{snr})"
        )
    return out


def goal(what: str, value: float, note: str) -> dict:
    return {"goal": what, "value": value, "target": None, "op": None, "met": None, "note": note}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=300)
    ap.add_argument("--eps", type=float, default=0.1, help="text: share of the words that may change")
    ap.add_argument("--speech-eps", type=float, default=0.01, help="speech: L-inf, share of each recording's peak")
    ap.add_argument("--attack", default="pgd", choices=["fgsm", "pgd"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--recordings", type=int, default=500)
    ap.add_argument("--speech-apps", default=",".join(SPEECH_APPS), help="comma-separated speech apps to attack")
    ap.add_argument("--skip-text", action="store_true")
    ap.add_argument("--skip-speech", action="store_true")
    ap.add_argument("--home", default=None, help="LUODI_HOME holding (or receiving) the trained runs")
    args = ap.parse_args()
    os.environ["LUODI_HOME"] = args.home or os.environ.get("LUODI_HOME") or tempfile.mkdtemp(prefix="luodi-rt-")
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from record import load, machine, save

    command = "python bench/robustness_text.py " + " ".join(sys.argv[1:])
    results = {}
    if not args.skip_text:
        results["banking-intents"] = text_part(args.texts, args.eps)
    if not args.skip_speech:
        for name in args.speech_apps.split(","):
            results[name] = speech_part(name, args.attack, args.speech_eps, args.recordings, args.steps)
    for r in results.values():  # each part says how and where it was measured
        r["command"], r["machine"] = command, machine()
    # a part not run here keeps its last stored numbers (read now: another run may have stored since)
    results = {**(load("robustness_text") or {}).get("results", {}), **results}
    goals = []
    if "banking-intents" in results:
        r = results["banking-intents"]
        goals += [
            goal(
                "banking-intents accuracy under word substitution",
                r["robust_accuracy"],
                f"{r['n']} validation texts, up to {r['eps']:.0%} of the words; clean {r['clean_accuracy']:.4f}; "
                f"mean similarity {r['similarity']['mean']:.3f}; no goal in issue 19",
            ),
        ]
    for name in SPEECH_APPS:
        if name in results:
            r = results[name]
            at = next(c for c in r["curve"] if c["eps"] == r["eps"])
            how = (
                "white-box"
                if r["attacked"].startswith("the CNN")
                else f"transfer attack from a surrogate CNN (white-box on it: {at['crafted_on_accuracy']:.4f})"
            )
            goals.append(
                goal(
                    f"{name} accuracy under {r['attack'].upper()} on the waveform",
                    r["robust_accuracy"],
                    f"{how}; eps {r['eps']:g} of each recording's peak (SNR {r['snr_db']:.1f} dB), {r['n']} "
                    f"recordings; clean {r['clean_accuracy']:.4f}; no goal in issue 19",
                )
            )
    path = save("robustness_text", {"machine": machine(), "args": vars(args), "results": results, "goals": goals})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
