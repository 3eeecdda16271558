"""ONNX export of the speech, anomaly and recommendation families on their real data sets (issue 17: "ONNX
exports agree with the PyTorch model on at least 99.9 % of validation predictions for every family").

    python bench/optimize_families.py [--home DIR] [--only speech,anomaly,recommendation]

Each part trains a shortened version of its example app (fewer epochs / Gibbs iterations: the export, not the
model, is measured) into a private LUODI_HOME, runs `luodi optimize --method onnx` on it and stores the trade-off
table (baseline and ONNX side by side, one process, the app's validation split) and the export's own check
against the model it replaces. Stored in bench/results/optimize_families.json (record.py).

- speech: examples/spoken-digits-cnn.yaml (FSDD, speaker george held out), 4 epochs, 2 CNNs: the ensemble as one
  graph; the log-mel features stay in numpy.
- anomaly: examples/intrusion-detection.yaml (NSL-KDD 20 %) with model.type autoencoder, 5 epochs: the
  autoencoder and its reconstruction error as one graph; preprocessing and thresholds stay in numpy.
- recommendation: examples/recommendation.yaml (MovieLens 100k), 60 Gibbs iterations: the towers as one graph
  scoring (user, item) pairs; the ranking over all items stays in numpy.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from goals import chosen_parts, run_and_store

ROOT = Path(__file__).resolve().parents[1]
GOAL_AGREEMENT = 0.999
PARTS = {
    "speech": ("spoken-digits-cnn.yaml", {"train.epochs": 4, "model.options.ensemble": 2, "train.max_minutes": 10}),
    "anomaly": ("intrusion-detection.yaml", {"model.type": "autoencoder", "train.epochs": 5}),
    "recommendation": ("recommendation.yaml", {"model.options.iterations": 60, "model.options.burn_in": 20}),
}


def run_part(part: str) -> dict:
    from luodi import api
    from luodi.apps.optimize import optimize

    example, overrides = PARTS[part]
    path = str(ROOT / "examples" / example)
    t0 = time.perf_counter()
    base = api.train(path, progress=False, overrides=overrides)
    trained = time.perf_counter() - t0
    res = optimize(path, "onnx", version=base.version, overrides=overrides, log=print)
    table = res["table"]
    check = next(v for k, v in res["details"].items() if k.endswith(("_vs_torch", "_vs_numpy")))
    return {"command": f"luodi train examples/{example} " + " ".join(f"--set {k}={v}" for k, v in overrides.items())
            + " && luodi optimize ... --method onnx", "train_seconds": round(trained, 1),
            "table": table, "check": check}


def goals(parts: dict) -> list[dict]:
    out = []
    for part, done in parts.items():
        agreement = done["table"]["rows"]["optimized"]["agreement"]
        r = done["table"]["ratios"]
        out.append({
            "goal": f"{part}: ONNX run agrees with the base run on validation predictions",
            "value": agreement, "target": GOAL_AGREEMENT, "op": ">=", "met": agreement >= GOAL_AGREEMENT,
            "note": f"{done['table']['valid_rows']} rows; max |diff| {done['check']['max_abs_diff']:.2e} against "
                    f"the replaced model; speed-up p50 {r['speedup_p50']}, batch 32 {r['speedup_batch32']}",
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", help="LUODI_HOME for the runs (default: a new temporary folder)")
    ap.add_argument("--only", help=f"comma-separated parts of {', '.join(PARTS)}")
    args = ap.parse_args()
    os.environ["LUODI_HOME"] = args.home or tempfile.mkdtemp(prefix="luodi-bench-families-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    chosen = chosen_parts(ap, args.only, list(PARTS))
    run_and_store("optimize_families", chosen, run_part, goals)


if __name__ == "__main__":
    main()
