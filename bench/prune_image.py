"""Structured pruning of the handwritten-digits CNN (issue 17: "pruned + recovered: at least 2.5x faster at most
1 pt lower", the encoder goal, measured here for the CNN), alone and with ONNX / int8 on top.

    python bench/prune_image.py [--home DIR] [--base VERSION] [--epochs N] [--channels F] [--reuse V,V,V,V]

Trains examples/handwritten-digits.yaml (or reuses --base in --home), then in that LUODI_HOME:
`luodi optimize --method prune` (optimize.prune.image: --channels of every conv, default half, Taylor importance, a
recovery on KL to the unpruned CNN + labels for --epochs), `--method onnx` on the base and on the pruned run, and
`--method int8` on the pruned run. Then every model is loaded from its run folder and timed in this one process,
in interleaved rounds, call by call (the machine is shared: the speed-ups use each model's 10th-percentile call,
its undisturbed cost; medians and CPU time (process_time) are stored beside): the network alone (`proba` on the
validation images, at batch 1 and in batches of 32) and the served path (`task.predict` on request records,
which adds decoding each image). --reuse times runs made before again without optimizing. Quality:
accuracy on the 2,000 validation images. Stored in bench/results/prune_image.json (record.py), one entry per
setting (channels, epochs); the goals of every stored setting.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from record import machine, save

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "handwritten-digits.yaml"
GOAL_SPEEDUP, GOAL_DROP, GOAL_AGREEMENT = 2.5, 0.01, 0.999
ROUNDS, BATCH1_CALLS, BATCH32_ROWS = 9, 200, 640


def _timed(fn: Any, items: list[Any]) -> tuple[list[float], list[float]]:
    """Wall and CPU (process_time) milliseconds of each call fn(item)."""
    wall, cpu = [], []
    for it in items:
        w0, c0 = time.perf_counter(), time.process_time()
        fn(it)
        wall.append((time.perf_counter() - w0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return wall, cpu


def time_model(task: Any, x: np.ndarray, records: list[dict]) -> dict[str, list[float]]:
    """One round, per call (ms): the network alone at batch 1 and 32, and the served path (task.predict)."""
    clf = task.need()
    ones = [x[i : i + 1] for i in range(BATCH1_CALLS)]
    batches = [x[i : i + 32] for i in range(0, BATCH32_ROWS, 32)]
    for b in ones[:10]:
        clf.proba(b)
    w1, c1 = _timed(clf.proba, ones)
    w32, c32 = _timed(clf.proba, batches)
    rw1, _ = _timed(lambda r: task.predict([r]), records[:BATCH1_CALLS])
    rw32, _ = _timed(task.predict, [records[i : i + 32] for i in range(0, BATCH32_ROWS, 32)])
    return {"net1": w1, "net1_cpu": c1, "net32": w32, "net32_cpu": c32, "served1": rw1, "served32": rw32}


def summarize(calls: dict[str, list[float]]) -> dict[str, float]:
    """Per-call times (all rounds) as the table's columns. The machine is shared, so a call's time is its own
    cost plus whatever preempted it: the 10th percentile estimates the undisturbed cost (what the speed-ups use),
    the median is what a request saw here; CPU time (process_time, all threads) is the median."""
    def pct(k: str, q: float) -> float:
        return float(np.percentile(calls[k], q))

    return {"net_ms_batch1": round(pct("net1", 10), 4), "net_ms_batch1_median": round(pct("net1", 50), 4),
            "net_cpu_ms_batch1": round(pct("net1_cpu", 50), 4),
            "net_rows_per_s_batch32": round(32e3 / pct("net32", 10), 1),
            "net_rows_per_s_batch32_median": round(32e3 / pct("net32", 50), 1),
            "net_rows_per_cpu_s_batch32": round(32e3 / max(pct("net32_cpu", 50), 1e-6), 1),
            "served_ms_batch1": round(pct("served1", 10), 4),
            "served_rows_per_s_batch32": round(32e3 / pct("served32", 10), 1)}


def _optimized(app: str, method: str, version: str, sets: dict, reuse: str | None) -> dict[str, Any]:
    """`luodi optimize` of `version` with `method`, or the stored result of the run `reuse` made that way."""
    from luodi import crypto
    from luodi.apps.optimize import OPTIMIZE_JSON, optimize
    from luodi.apps.registry import get_run

    if reuse is None:
        return optimize(app, method, version=version, overrides=sets, log=print)
    run = get_run("handwritten-digits", reuse)
    done = crypto.read_json(run.path / OPTIMIZE_JSON)
    if done["methods"][-1] != method or done["base_version"] != version:
        raise SystemExit(f"--reuse: {reuse} is {done['methods']} from {done['base_version']}, not {method} of "
                         f"{version}")
    return {"run": {"version": reuse}, **done}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", help="LUODI_HOME for the runs (default: a new temporary folder)")
    ap.add_argument("--base", help="a trained handwritten-digits version in --home to start from (else: train)")
    ap.add_argument("--epochs", type=int, default=None, help="optimize.prune.image.epochs (default: the config's)")
    ap.add_argument("--channels", type=float, default=None,
                    help="optimize.prune.image.channels (default: the config's)")
    ap.add_argument("--one-thread", action="store_true", help="time torch and ONNX Runtime on one thread (the "
                    "cost per core: contention for the cores of a busy machine cannot distort it)")
    ap.add_argument("--reuse", help="time stored runs again instead of optimizing: the versions of the pruned, "
                    "base + onnx, pruned + onnx and pruned + int8 runs, comma-separated (as printed before)")
    args = ap.parse_args()
    os.environ["LUODI_HOME"] = args.home or tempfile.mkdtemp(prefix="luodi-bench-prune-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from luodi import api

    app = str(APP)
    base = args.base or api.train(app, progress=False).version
    chosen = (("optimize.prune.image.epochs", args.epochs), ("optimize.prune.image.channels", args.channels))
    sets = {k: v for k, v in chosen if v is not None}
    reuse = args.reuse.split(",") if args.reuse else [None] * 4
    t0 = time.perf_counter()
    pruned = _optimized(app, "prune", base, sets, reuse[0])
    prune_seconds = time.perf_counter() - t0 if args.reuse is None else None
    base_onnx = _optimized(app, "onnx", base, {}, reuse[1])
    pruned_onnx = _optimized(app, "onnx", pruned["run"]["version"], {}, reuse[2])
    pruned_int8 = _optimized(app, "int8", pruned["run"]["version"], {}, reuse[3])
    print("versions (for --reuse):", ",".join(r["run"]["version"] for r in (pruned, base_onnx, pruned_onnx,
                                                                             pruned_int8)))
    int8_name = "pruned + int8" + (" (float32 kept)" if pruned_int8["details"].get("kept") else "")
    versions = {"base (torch)": base, "pruned (torch)": pruned["run"]["version"],
                "base + onnx": base_onnx["run"]["version"], "pruned + onnx": pruned_onnx["run"]["version"],
                int8_name: pruned_int8["run"]["version"]}
    tasks = {name: api.load_predictor("handwritten-digits", v).task for name, v in versions.items()}
    if args.one_thread:
        import torch

        torch.set_num_threads(1)
        for task in tasks.values():
            session = getattr(task.need(), "session", None)
            if session is not None:
                session.threads = 1  # SizedSession: its single-thread session for every batch size
    some = tasks["base (torch)"]
    _, valid = some.split(some.read(None))
    x, records = some.model_input(valid), some.records_of(valid)
    calls: dict[str, dict[str, list[float]]] = {n: {} for n in tasks}
    for _ in range(ROUNDS):  # interleaved: a busy moment of the shared machine falls on every model alike
        for name, task in tasks.items():
            for k, v in time_model(task, x, records).items():
                calls[name].setdefault(k, []).extend(v)
    rows = {}
    for name, task in tasks.items():
        rows[name] = {"version": versions[name], "accuracy": round(float(task.evaluate(valid)["accuracy"]), 5),
                      "parameters": task.parameter_count(), **summarize(calls[name])}
    b = rows["base (torch)"]
    for row in rows.values():
        row["speedup_net_batch1"] = round(b["net_ms_batch1"] / row["net_ms_batch1"], 2)
        row["speedup_net_batch32"] = round(row["net_rows_per_s_batch32"] / b["net_rows_per_s_batch32"], 2)
        row["speedup_served_batch1"] = round(b["served_ms_batch1"] / row["served_ms_batch1"], 2)
        row["speedup_served_batch32"] = round(row["served_rows_per_s_batch32"] / b["served_rows_per_s_batch32"], 2)
        row["accuracy_drop_pt"] = round((b["accuracy"] - row["accuracy"]) * 100, 2)
    details = pruned["details"]
    setting = f"channels {args.channels or 0.5}, epochs {args.epochs or 2}" + (", 1 thread" if args.one_thread else "")
    flags = "".join(f" --{k} {v}" for k, v in (("channels", args.channels), ("epochs", args.epochs)) if v)
    flags += " --one-thread" if args.one_thread else ""
    run = {
        "setting": setting,
        "command": f"python bench/prune_image.py{flags} (luodi train examples/handwritten-digits.yaml; luodi "
                   f"optimize ... --method prune{''.join(f' --set {k}={v}' for k, v in sets.items())}; "
                   "--method onnx on both; --method int8 on the pruned run)",
        "prune": {"convs": details["convs"], "macs": details["macs"], "parameters": details["parameters"],
                  "seconds": None if prune_seconds is None else round(prune_seconds, 1)},
        "rows": rows, "optimize_tables": {"prune": pruned["table"], "pruned_onnx": pruned_onnx["table"]},
        "onnx_check": pruned_onnx["details"]["float32_vs_torch"], "int8_details": pruned_int8["details"],
        "goals": goals(rows, pruned_onnx, setting), "machine": machine(),
    }
    from record import load

    stored = load("prune_image") or {}
    stored.setdefault("runs", {})
    stored["runs"][setting] = run
    stored["goals"] = [g for r in stored["runs"].values() for g in r["goals"]]
    stored["machine"] = run["machine"]
    save("prune_image", stored)
    cols = ["accuracy", "parameters", "net_ms_batch1", "net_rows_per_s_batch32", "served_ms_batch1",
            "served_rows_per_s_batch32", "speedup_net_batch1", "speedup_net_batch32", "speedup_served_batch1",
            "speedup_served_batch32"]
    print("\nmodel            " + " ".join(f"{c[:14]:>14}" for c in cols))
    for name, row in rows.items():
        print(f"{name:<16} " + " ".join(f"{row[c]:>14}" for c in cols))
    for g in run["goals"]:
        mark = {True: "met", False: "MISSED", None: "measured"}[g["met"]]
        print(f"{g['goal']:<72} {g['value']:>8}  {g['op']} {g['target']}  {mark}  {g['note']}")
    print(f"machine: {run['machine']}")


def _reference(row: dict) -> dict:
    """Issue 17 sets its 2.5x / 1 pt pruning goal for encoders, none for CNNs: the CNN's speed-ups are measured
    against that bar for reference (met left empty; the note says whether they would meet it)."""
    bar = "would meet" if row["met"] else "would miss"
    return {**row, "met": None, "note": f"the encoders' bar, for reference ({bar} it); {row['note']}"}


def goals(rows: dict[str, dict], pruned_onnx: dict, setting: str) -> list[dict]:
    """The issue's pruning goal (>= 2.5x at <= 1 pt, stated for encoders) for the CNN, per batch size and
    runtime, and the export's agreement goal for the pruned CNN."""
    out = []
    drop_ok = {n: r["accuracy_drop_pt"] <= GOAL_DROP * 100 for n, r in rows.items()}
    for name in ("pruned (torch)", "pruned + onnx"):
        r = rows[name]
        for batch in ("batch1", "batch32"):
            v = r[f"speedup_net_{batch}"]
            out.append(_reference({
                "goal": f"{setting}: {name} vs base (torch): network speed-up at "
                        f"{batch.replace('batch', 'batch ')}, <= 1 pt lower",
                "value": v, "target": GOAL_SPEEDUP, "op": ">=",
                "met": bool(v >= GOAL_SPEEDUP and drop_ok[name]),
                "note": f"accuracy drop {r['accuracy_drop_pt']} pt; served path (decoding included) "
                        f"{r[f'speedup_served_{batch}']}x",
            }))
    po, bo = rows["pruned + onnx"], rows["base + onnx"]
    for batch, ratio in (("batch 1", bo["net_ms_batch1"] / po["net_ms_batch1"]),
                         ("batch 32", po["net_rows_per_s_batch32"] / bo["net_rows_per_s_batch32"])):
        out.append(_reference({"goal": f"{setting}: pruned + onnx vs base + onnx (the pruning's own share): speed-up "
                                       f"at {batch}, <= 1 pt lower",
                               "value": round(ratio, 2), "target": GOAL_SPEEDUP, "op": ">=",
                               "met": bool(ratio >= GOAL_SPEEDUP and drop_ok["pruned + onnx"]),
                               "note": "both ONNX Runtime"}))
    agreement = pruned_onnx["table"]["rows"]["optimized"]["agreement"]
    out.append({"goal": f"{setting}: pruned CNN as ONNX agrees with the pruned torch run (validation)",
                "value": agreement,
                "target": GOAL_AGREEMENT, "op": ">=", "met": bool(agreement >= GOAL_AGREEMENT),
                "note": f"max |diff| {pruned_onnx['details']['float32_vs_torch']['max_abs_diff']:.1e} on the "
                        "calibration rows"})
    return out


if __name__ == "__main__":
    main()
