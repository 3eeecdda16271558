"""Tune an app: search tune.space, scoring each trial as `luodi cv` scores a fold (apps/cv.py), on Optuna in
this process or on Ray Tune (the search backends are in apps/hpo.py); searches resume by config fingerprint."""

from __future__ import annotations

import time
from typing import Any

from luodi import atomic
from luodi.apps import registry
from luodi.apps.configs import AppRef, load_app
from luodi.apps.cv import cross_validate, fit_and_score
from luodi.apps.hpo import parse_space, run_optuna, run_ray
from luodi.apps.train import train
from luodi.config import AppConfig, apply_overrides, config_fingerprint
from luodi.errors import BadRequest, ConfigError
from luodi.evaluate.metrics import is_lower_better
from luodi.tasks import task_for


def tune(
    app: AppRef,
    *,
    sampler: str | None = None,
    trials: int | None = None,
    folds: int | None = None,
    executor: str = "local",
    progress: bool = True,
    train_best: bool = False,
    cpus: int | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Search tune.space; each trial fits on the train split (or k folds of it) and scores the validation metric.

    executor "local" runs Optuna in this process, storing each finished trial in runs/<app>/tune.db, so
    `resume=True` continues an interrupted search of the same config; "ray" runs the trials on Ray Tune
    (`cpus`: local Ray CPUs), its experiments under runs/<app>/ray/ (`resume=True`: Tuner.restore).
    `overrides` ({dotted path: value}) change the base config first, e.g. {"tune.trials": 5}.
    """
    cfg = load_app(app, overrides)
    tc = cfg.tune
    space = parse_space(tc.space)
    sampler = sampler or tc.sampler
    trials = trials or tc.trials
    folds = folds or tc.folds
    if "direction" not in tc.model_fields_set and tc.metric and is_lower_better(tc.metric):
        tc = tc.model_copy(update={"direction": "minimize"})
    base = task_for(cfg)
    tr, va = base.split(base.read(None))
    metric_box: dict[str, str] = {}

    def objective(params: dict[str, Any]) -> float:
        c = apply_overrides(cfg, params, "tune.space")
        m = cross_validate(c, folds, tr, progress=False)["mean"] if folds > 1 else fit_and_score(c, tr, va)
        name = metric_box.setdefault("metric", metric_name(c, m))
        if name not in m:
            raise ConfigError(f"'tune.metric' '{name}' is not computed; available: {', '.join(m)}")
        return float(m[name])

    out_dir = registry.runs_root(cfg.train.output_dir) / cfg.name
    if executor == "ray":
        # trials run in Ray workers: the metric's name is settled here, as the workers cannot report it back
        if not (tc.metric or cfg.evaluate.metrics):
            raise ConfigError("--executor ray needs the metric to optimize: set tune.metric or evaluate.metrics")
        metric_box["metric"] = metric_name(cfg, {})
        # Tune cannot add trials to a restored experiment: --trials is part of what must match
        fingerprint = config_fingerprint(cfg, ("tune.trials",), sampler=sampler, folds=folds, trials=trials)
        res = run_ray(
            space, tc, objective, trials, sampler, cfg.train.seed, storage_dir=out_dir / "ray", cpus=cpus,
            progress=progress, fingerprint=fingerprint, resume=resume,
        )
    elif executor == "local":
        out_dir.mkdir(parents=True, exist_ok=True)
        # tune.trials is left out: a resumed search may be extended with more trials
        fingerprint = config_fingerprint(cfg, ("tune.trials",), sampler=sampler, folds=folds)
        res = run_optuna(
            space, tc, objective, trials, sampler, cfg.train.seed, progress,
            storage_path=out_dir / "tune.db", fingerprint=fingerprint, resume=resume,
        )
    else:
        raise BadRequest(f"unknown executor '{executor}'; use local or ray", param="executor")
    res.update(app=cfg.name, sampler=sampler, metric=metric_box.get("metric"), direction=tc.direction, folds=folds)
    atomic.write_json(out_dir / f"tune-{time.strftime('%Y%m%d-%H%M%S')}.json", res)
    if train_best:
        best_cfg = apply_overrides(cfg, res["best_params"], "tune.space")
        res["run"] = train(best_cfg, progress=progress).as_dict()
    return res


def metric_name(cfg: AppConfig, metrics: dict[str, Any]) -> str:
    """The metric a search optimizes: tune.metric, else the first of evaluate.metrics, else a usual one."""
    if cfg.tune.metric:
        return cfg.tune.metric
    if cfg.evaluate.metrics:
        return cfg.evaluate.metrics[0]
    for m in ("roc_auc", "accuracy", "f1", "rmse", "loss"):
        if m in metrics:
            return m
    return next(k for k, v in metrics.items() if isinstance(v, int | float))
