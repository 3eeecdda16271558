"""`luodi optimize`: a new run version made from a trained one (ONNX, int8, float16, ...), measured against it.

The base run's files are copied into a new version, the task rewrites its model there (`task.optimize`), and the
result is loaded back from disk and measured beside the base in one process (luodi.apps.compare). The table goes
into the run's optimize.json, metrics.json and report.html; the run is a normal run that serves once promoted
(`luodi promote`; being newest is not enough: the served model changes only by choice), and a
later `optimize --version` can start from it (methods compose: distill, then int8).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any

from luodi import atomic, crypto
from luodi.apps import registry
from luodi.apps.compare import compare, table_html
from luodi.apps.configs import AppRef, config_yaml, load_app
from luodi.apps.registry import RunInfo
from luodi.apps.report import select_metrics, write_report
from luodi.config import load_app_config
from luodi.errors import ConfigError, LuodiError
from luodi.options.optimize import OptimizeConfig
from luodi.tasks import task_for

OPTIMIZE_JSON = registry.OPTIMIZED
TRAINING_METHODS = ("distill", "prune")  # task.<method>(run_dir, train, opts, say); the others: task.optimize(...)
DERIVED = ("report.html", "metrics.json", OPTIMIZE_JSON, "config.yaml")  # rewritten for the new run


def optimize(
    app: AppRef,
    method: str,
    *,
    version: str | None = None,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Make a new run of `app` from its served run (or `version`) with `method`; returns the run and the table."""
    say = log or (lambda m: None)
    cfg = load_app(app, overrides)
    opts = cfg.optimize or OptimizeConfig()
    base_run = registry.get_run(cfg.name, version)
    if base_run.status != "done":
        raise LuodiError(f"run {cfg.name} {base_run.version} is {base_run.status}; optimize a finished run",
                         status=409, param="version")
    registry.verify_manifest(base_run.path)
    base_cfg = load_app_config(base_run.path / "config.yaml").model_copy(update={"optimize": opts})
    base = task_for(base_cfg)
    methods = getattr(base, "optimize_methods", ())
    if method not in methods:
        offered = f"this app offers: {', '.join(methods)}" if methods else "this app's task has none yet"
        raise ConfigError(f"--method '{method}' is not available for task {base_cfg.task}; {offered}",
                          param="method")
    base.load(base_run.path)
    data = base.read(None)
    train, valid = base.split(data)
    calibration = _sample(train, opts.calibration_rows, opts.seed)
    metric = _quality_metric(base_cfg, base, calibration)
    run = registry.create_run(cfg.name, base_cfg.task)
    say(f"optimizing {cfg.name} {base_run.version} with {method} into {run.version} ({run.path})")
    t0 = time.perf_counter()
    try:
        result = _build(base_cfg, base_run, run, method, (train, calibration), metric, opts, say)
        result["table"] = compare(base, base_run.path, result.pop("task"), run.path, valid, metric, opts)
        metrics = _record(base_cfg, base_run, run, result, time.perf_counter() - t0)
    except KeyboardInterrupt:
        registry.set_status(cfg.name, run.version, "interrupted")
        raise
    except BaseException:
        registry.set_status(cfg.name, run.version, "failed")
        raise
    info = registry.set_status(cfg.name, run.version, "done", metrics)
    return {"run": info.as_dict(), **result}


def _build(cfg, base_run: RunInfo, run: RunInfo, method: str, rows, metric: str, opts, say) -> dict:
    """Copy the base run's model files into `run`, let the task optimize them there (`rows`: the training split
    and its calibration sample), load the result back."""
    train, calibration = rows
    listed = crypto.read_json(base_run.path / registry.MANIFEST)["files"]
    for rel in listed:
        if rel not in DERIVED:
            (run.path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(base_run.path / rel, run.path / rel)
    atomic.write_text(run.path / "config.yaml", config_yaml(cfg))
    task = task_for(cfg)
    task.load(run.path)

    def score() -> float:
        return float(task.evaluate(calibration)[metric])

    if method in TRAINING_METHODS:  # these train again, on the whole training split
        done = getattr(task, method)(run.path, train, opts, say)
    else:
        done = task.optimize(method, run.path, score, calibration, opts, say)
    chain = _methods_of(base_run) + [method]
    loaded = task_for(cfg)  # measured as it will be served: from the files on disk
    loaded.load(run.path)
    return {"base_version": base_run.version, "methods": chain, "details": done, "task": loaded}


def _quality_metric(cfg: Any, task: Any, rows: Any) -> str:
    """The metric the table and the int8 bound use: evaluate.metrics' first, else the goal's, else accuracy when
    the task computes it, else the first number it computes (a regressor's)."""
    if cfg.evaluate.metrics:
        return cfg.evaluate.metrics[0]
    if cfg.evaluate.goal:
        return cfg.evaluate.goal.metric
    computed = [k for k, v in task.evaluate(rows).items() if isinstance(v, float)]
    return "accuracy" if "accuracy" in computed or not computed else computed[0]


def _sample(rows: Any, n: int, seed: int) -> Any:
    """At most n rows of the training split (a table, an image / audio set or a list), drawn with `seed`."""
    import numpy as np

    if len(rows) <= n:
        return rows
    pick = np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))
    if hasattr(rows, "iloc"):
        return rows.iloc[pick].reset_index(drop=True)
    if hasattr(rows, "subset"):  # image and speech sets
        return rows.subset(pick)
    return [rows[i] for i in pick]


def _methods_of(run: RunInfo) -> list[str]:
    path = run.path / OPTIMIZE_JSON
    return crypto.read_json(path)["methods"] if path.exists() else []


def _record(cfg, base_run: RunInfo, run: RunInfo, result: dict, seconds: float) -> dict[str, float]:
    """optimize.json, metrics.json, report.html and the manifest (last) of the new run; its runs-table metrics."""
    table = result["table"]
    row = table["rows"]["optimized"]
    metrics = {table["metric"]: row["quality"], "size_mb": row["size_mb"], "p50_ms": row["p50_ms"],
               "speedup_p50": table["ratios"]["speedup_p50"], "agreement": row["agreement"]}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    atomic.write_json(run.path / OPTIMIZE_JSON, {k: v for k, v in result.items() if k != "run"})
    info = {"app": cfg.name, "version": run.version, "task": cfg.task, "optimized_from": base_run.version,
            "methods": " + ".join(result["methods"]), "optimize_seconds": round(seconds, 2)}
    atomic.write_json(run.path / "metrics.json", {"valid": select_metrics(cfg, metrics), **info})
    title = f"{cfg.name} {run.version} — optimized ({info['methods']}) from {base_run.version}"
    write_report(run.path / "report.html", title, metrics, [], info, [table_html(table)])
    registry.delete_checkpoint(run.path)
    registry.write_manifest(run.path, {"app": cfg.name, "version": run.version, "task": cfg.task,
                                       "optimized_from": base_run.version})
    return metrics
