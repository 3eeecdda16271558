"""Quality bench: train and evaluate every example app, print a table and store it in bench/results/quality.json
(docs/benchmarks.md's table is rendered from it by bench/tables.py).

    python bench/quality.py [--only NAME ...] [--skip-train] [--cv K] [--set KEY=VALUE ...]

Columns: case, task, dataset, goal, measured value (validation split of the dataset we have; goals that
name a kept-aside test set cannot be measured here), a same-split baseline where one applies (default
LightGBM for tabular and anomaly apps), train time, batched prediction time per row and single-record latency.
Results of earlier runs for other cases are kept (bench/results/quality.json), so --only updates one row.
`--cv K` adds K-fold CV of the goal metric over the whole dataset for table apps (on a few hundred rows a
validation split is too noisy to read a goal from). `--set` changes one config value for every app run (as
`luodi train --set`, e.g. `data.split.seed=1` to score another validation split); such rows are stored under
"NAME [KEY=VALUE]" beside the default ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import record
import tables
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

def dataset_of(cfg) -> str:
    if cfg.data.path:
        parts = Path(cfg.data.path.replace("${LUODI_DATASETS}", "DS")).parts
        return parts[1] if parts and parts[0] == "DS" and len(parts) > 1 else Path(cfg.data.path).name
    return cfg.data.format or "-"


def baseline(cfg, tr, va) -> float | None:
    """Default LightGBM (100 rounds, lr 0.1, no tuning) on the same split, scored on the goal metric."""
    from luodi.config import ModelConfig
    from luodi.tasks import task_for

    if cfg.task not in ("tabular", "anomaly-detection") or not cfg.evaluate.goal:
        return None
    opts = {"n_estimators": 100, "calibration": "none", "early_stopping_rounds": 10_000}
    if cfg.task == "tabular":
        c = cfg.model_copy(
            update={
                "model": ModelConfig(type="lightgbm", options=opts),
                "train": cfg.train.model_copy(update={"lr": 0.1}),
            }
        )
        t = task_for(c)
    else:
        c = cfg.model_copy(
            update={
                "model": cfg.model.model_copy(
                    update={
                        "options": {
                            **cfg.model.options,
                            "detectors": [],
                            "classifier": opts,
                            "classifier_lr": 0.1,
                        }
                    }
                )
            }
        )
        t = task_for(c)
    with tempfile.TemporaryDirectory() as d:
        t.fit(tr, va, Path(d), progress=False)
    return t.evaluate(va).get(cfg.evaluate.goal.metric)


def measure(path: Path, skip_train: bool, overrides: dict | None = None, cv_folds: int = 0) -> dict:
    from luodi import api
    from luodi.apps import registry
    from luodi.tasks import task_for

    cfg = api.load_app(path, overrides)
    tag = " ".join(f"{k}={v}" for k, v in (overrides or {}).items())
    row = {
        "case": f"{cfg.name} [{tag}]" if tag else cfg.name,
        "file": str(path.relative_to(ROOT)),
        "task": cfg.task,
        "dataset": dataset_of(cfg),
    }
    goal = cfg.evaluate.goal
    metric, target = (goal.metric, goal.target) if goal else (None, None)
    lower_is_better = bool(goal) and goal.direction == "minimize"
    row["goal"] = (f"{metric} {'<=' if lower_is_better else '>='} {target}" + (f" ({goal.note})" if goal.note else "")
                   if goal else "-")
    t0 = time.perf_counter()
    run = registry.get_run(cfg.name) if skip_train else api.train(path, progress=False, overrides=overrides)
    row["train_s"] = round(run.metrics.get("train_seconds", time.perf_counter() - t0), 1)
    metric = metric or next(iter(cfg.evaluate.metrics), None) or next(iter(run.metrics))
    row["metric"] = metric
    row["measured"] = run.metrics.get(metric)
    if row["measured"] is None or target is None:
        row["met"] = None
    else:
        row["met"] = bool(row["measured"] <= target if lower_is_better else row["measured"] >= target)
    pred = api.load_predictor(cfg.name)
    fresh = task_for(pred.config)
    tr, va = fresh.split(fresh.read(None))
    t0 = time.perf_counter()
    pred.task.evaluate(va)
    row["ms_per_row_batched"] = round(1000 * (time.perf_counter() - t0) / max(1, len(va)), 3)
    row["ms_single"] = None
    if hasattr(va, "to_dict"):
        feats = getattr(getattr(pred.task, "prep", None), "features", None)
        recs = va[feats].head(30).to_dict(orient="records") if feats else None
        if recs:
            times = []
            for r in recs:
                t0 = time.perf_counter()
                pred.predict([r])
                times.append(1000 * (time.perf_counter() - t0))
            row["ms_single"] = round(statistics.median(times), 2)
    try:
        row["baseline"] = baseline(cfg, tr, va)
    except Exception as e:  # noqa: BLE001 - a baseline is optional
        row["baseline"] = None
        print(f"  baseline failed: {e}", file=sys.stderr)
    held_out = bool({"holdout", "by", "speaker"} & cfg.data.split.model_fields_set)  # random folds would mix them in
    if cv_folds and cfg.task in ("tabular", "anomaly-detection") and metric and not held_out:
        res = api.cv(path, folds=cv_folds, progress=False, overrides=overrides)
        if metric in res["mean"]:
            row["cv"] = {"folds": cv_folds, "mean": res["mean"][metric], "std": res["std"][metric]}
    row["version"] = run.version
    for k in ("unseen_recall", "false_positive_rate", "roc_auc", "accuracy"):
        if k in run.metrics and k != metric:
            row.setdefault("extra", {})[k] = round(run.metrics[k], 4)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="app names or example file stems to run")
    ap.add_argument("--skip-train", action="store_true", help="measure the latest trained runs")
    ap.add_argument("--examples", default=str(ROOT / "examples"))
    ap.add_argument("--cv", type=int, default=0, metavar="K",
                    help="also K-fold CV over the whole dataset (tabular and anomaly apps), as `luodi cv`")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="change one config value for this run (repeatable), as `luodi train --set`")
    args = ap.parse_args()
    from luodi.config import load_app_config, parse_overrides
    from luodi.errors import ConfigError

    try:
        overrides = parse_overrides(args.overrides)
    except ConfigError as e:
        ap.error(str(e))

    store = RESULTS / "quality.json"
    rows = {r["case"]: r for r in json.loads(store.read_text())} if store.exists() else {}
    for f in sorted(Path(args.examples).glob("*.yaml")):
        raw = yaml.safe_load(f.read_text()) or {}
        if not isinstance(raw, dict) or "task" not in raw:
            continue  # not an App file (e.g. an agent or assistant test set)
        try:
            name = load_app_config(f).name
        except Exception as e:  # noqa: BLE001
            print(f"{f.name}: invalid app file: {e}", file=sys.stderr)
            continue
        if args.only and name not in args.only and f.stem not in args.only:
            continue
        print(f"== {name} ({f.name})", flush=True)
        try:
            row = measure(f.resolve(), args.skip_train, overrides, args.cv)
        except Exception as e:  # noqa: BLE001 - one broken example must not stop the bench
            row = {"case": name, "error": f"{type(e).__name__}: {str(e)[:200]}"}
        rows[row["case"]] = row
        print(json.dumps(row), flush=True)
    ordered = [rows[k] for k in sorted(rows)]
    record.save("quality", ordered)
    print(tables.quality_table(ordered))
    print("stored in bench/results/quality.json; docs tables: python bench/tables.py")


if __name__ == "__main__":
    main()
