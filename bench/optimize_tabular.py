"""Distillation and export of the tabular apps on their real data (issue 17: "a smaller student keeps >= 98 % of
the teacher's quality and is faster"; "an exported bundle's predict.py reproduces luodi's predictions").

    python bench/optimize_tabular.py [--home DIR] [--only credit-risk,income]

Each part trains its example app with `train.refit=false` (the served model is then the one the validation split
never saw, so the table's quality column is held out for teacher and student alike), then
`luodi optimize --method distill` (an MLP student learns the cross-fitted ensemble), then `--method onnx` on top
of the student, and exports the student + ONNX run with `luodi export` and runs its predict.py in a clean
interpreter on the validation rows. The trade-off tables are luodi's own (wall time, one process); beside them
the batch-1 CPU time (process_time) of teacher and student, measured here in one process. Stored in
bench/results/optimize_tabular.json (record.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from goals import chosen_parts, run_and_store

ROOT = Path(__file__).resolve().parents[1]
GOAL_QUALITY = 0.98
PARTS = {"credit-risk": "credit-risk.yaml", "income": "income.yaml"}
OVERRIDES = {"train.refit": False}


def cpu_p50_ms(task, records: list[dict], n: int = 300) -> float:
    """Median CPU milliseconds (process_time: every thread of the process) of predict([record])."""
    for r in records[:10]:
        task.predict([r])
    times = []
    for r in records[:n]:
        t0 = time.process_time()
        task.predict([r])
        times.append(time.process_time() - t0)
    times.sort()
    return round(times[len(times) // 2] * 1000, 4)


def bundle_check(app: str, path: str, version: str, records: list[dict], out: Path) -> dict:
    """Export `version`, run its predict.py on the records as CSV, compare with luodi's predictions."""
    from luodi import api
    from luodi.apps.export import export

    export(path, out, version=version)
    features = json.loads((out / "preprocess.json").read_text())["features"]
    rows = out.parent / "rows.csv"
    with rows.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=features)
        w.writeheader()
        w.writerows({c: "" if r[c] is None else r[c] for c in features} for r in records)
    proc = subprocess.run([sys.executable, "-I", str(out / "predict.py"), str(rows)], capture_output=True,
                          text=True, check=True)
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    want = api.predict(app, records, version=version)
    same = sum(g["label"] == w["label"] for g, w in zip(got, want, strict=True)) / len(want)
    diff = max(abs(g["probability"] - w["probability"]) for g, w in zip(got, want, strict=True))
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    return {"rows": len(want), "label_agreement": same, "max_abs_probability_diff": diff, "bundle_mb": round(size, 3)}


def run_part(part: str, home: Path) -> dict:
    from luodi import api
    from luodi.apps.optimize import optimize

    path = str(ROOT / "examples" / PARTS[part])
    t0 = time.perf_counter()
    base = api.train(path, progress=False, overrides=OVERRIDES)
    trained = time.perf_counter() - t0
    t0 = time.perf_counter()
    student = optimize(path, "distill", version=base.version, overrides=OVERRIDES, log=print)
    distilled = time.perf_counter() - t0
    onnx = optimize(path, "onnx", version=student["run"]["version"], overrides=OVERRIDES, log=print)
    name = student["run"]["app"]
    teacher_task = api.load_predictor(name, base.version).task
    _, valid = teacher_task.split(teacher_task.read(None))
    records = teacher_task.records_of(valid)
    cpu = {"teacher": cpu_p50_ms(teacher_task, records)}
    for key, res in (("student", student), ("student_onnx", onnx)):
        cpu[key] = cpu_p50_ms(api.load_predictor(name, res["run"]["version"]).task, records)
    bundle = bundle_check(name, path, onnx["run"]["version"], records, home / f"bundle-{part}" / "bundle")
    return {"command": f"luodi train examples/{PARTS[part]} --set train.refit=false && luodi optimize "
            f"examples/{PARTS[part]} --method distill --version {base.version} && luodi optimize ... --method onnx "
            f"--version {student['run']['version']} && luodi export ... --version {onnx['run']['version']}",
            "train_seconds": round(trained, 1), "distill_seconds": round(distilled, 1),
            "details": student["details"], "distill": student["table"], "onnx": onnx["table"],
            "cpu_p50_ms": cpu, "bundle": bundle}


def goals(parts: dict) -> list[dict]:
    out = []
    for part, done in parts.items():
        t = done["distill"]
        b, s = t["rows"]["baseline"], t["rows"]["optimized"]
        kept = s["quality"] / b["quality"]
        on = done["onnx"]["rows"]["optimized"]
        cpu = done["cpu_p50_ms"]
        out += [
            {"goal": f"{part}: MLP student {t['metric']} / teacher's", "value": round(kept, 4),
             "target": GOAL_QUALITY, "op": ">=", "met": kept >= GOAL_QUALITY,
             "note": f"{b['quality']} -> {s['quality']}; agreement {s['agreement']}"},
            {"goal": f"{part}: student batch-1 speed-up (p50 wall, luodi predict)", "value": t["ratios"]["speedup_p50"],
             "target": 1.0, "op": ">", "met": t["ratios"]["speedup_p50"] > 1.0,
             "note": f"p50 {b['p50_ms']} -> {s['p50_ms']} ms; student + onnx {on['p50_ms']} ms; CPU p50 "
                     f"{cpu['teacher']} -> {cpu['student']} / {cpu['student_onnx']} ms; size {b['size_mb']} -> "
                     f"{s['size_mb']} MB; batch 32 {b['rows_per_s_batch32']} -> {s['rows_per_s_batch32']} rows/s"},
            {"goal": f"{part}: exported bundle (student + onnx) predict.py labels = luodi's",
             "value": done["bundle"]["label_agreement"], "target": 0.999, "op": ">=",
             "met": done["bundle"]["label_agreement"] >= 0.999,
             "note": f"{done['bundle']['rows']} rows; max |probability diff| "
                     f"{done['bundle']['max_abs_probability_diff']:.1e}; {done['bundle']['bundle_mb']} MB"},
        ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", help="LUODI_HOME for the runs (default: a new temporary folder)")
    ap.add_argument("--only", help=f"comma-separated parts of {', '.join(PARTS)}")
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="luodi-bench-tabular-"))
    os.environ["LUODI_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    chosen = chosen_parts(ap, args.only, list(PARTS))
    run_and_store("optimize_tabular", chosen, lambda part: run_part(part, home), goals)


if __name__ == "__main__":
    main()
