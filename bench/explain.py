"""Explanation latency: one record explained at a time (TreeSHAP for LightGBM + ablation of the other members),
p50 / p99 over many records, through the task's `explain` (what `predict?explain=true` and
`POST /v1/apps/{name}/explain` call, without HTTP).

    python bench/explain.py [--app credit-risk] [--records 500] [--home DIR]

Trains the app first unless a finished run exists under --home (LUODI_HOME; default a temporary folder).
credit-risk needs the shared datasets (LUODI_DATASETS). Goal: p99 <= 5 ms on credit-risk (issue 19). Printed,
not asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
APPS = {"credit-risk": ROOT / "examples" / "credit-risk.yaml", "income": ROOT / "examples" / "income.yaml"}
GOAL_P99_MS = 5.0


def latencies(fn, rows: list[dict]) -> list[float]:
    """Milliseconds of fn([row]) for each row, one at a time."""
    out = []
    for r in rows:
        t = time.perf_counter()
        fn([r])
        out.append(1000 * (time.perf_counter() - t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app", default="credit-risk", choices=sorted(APPS))
    ap.add_argument("--records", type=int, default=500)
    ap.add_argument("--home", default=None, help="LUODI_HOME holding (or receiving) the trained run")
    args = ap.parse_args()
    os.environ["LUODI_HOME"] = args.home or os.environ.get("LUODI_HOME") or tempfile.mkdtemp(prefix="luodi-explain-")
    from luodi import api
    from luodi.apps import registry

    if args.app not in registry.apps_with_runs():
        print(f"training {args.app} ...", flush=True)
        api.train(APPS[args.app], progress=False)
    pred = api.load_predictor(args.app)
    task = pred.task
    _, valid = task.split(task.read(None))
    rows = valid[task.prep.features].to_dict(orient="records")
    rows = (rows * (args.records // max(1, len(rows)) + 1))[: args.records]
    for r in rows[:20]:  # warm-up: first calls load libraries, build ONNX sessions' caches
        task.explain([r])
    explain_ms, predict_ms = latencies(task.explain, rows), latencies(task.predict, rows)
    out = task.explain(rows[-1:])
    ex = out[0]["explanation"]
    p50, p99 = np.percentile(explain_ms, [50, 99])
    verdict = "met" if p99 <= GOAL_P99_MS else "MISSED"
    print(f"{args.app} {pred.run.version}: {len(rows)} single-record explanations ({ex['method']})")
    print(f"  explain p50 {p50:.2f} ms   p99 {p99:.2f} ms   (goal p99 <= {GOAL_P99_MS} ms: {verdict})")
    q50, q99 = np.percentile(predict_ms, [50, 99])
    print(f"  predict alone (no explanation) p50 {q50:.2f} ms   p99 {q99:.2f} ms")
    top = ", ".join(f"{e['feature']} {e['effect']:+.3f}" for e in ex["effects"][:3])
    print(f"  last record: {ex['target']} = {ex['base']:.3f} (base) + effects; top: {top}")


if __name__ == "__main__":
    main()
