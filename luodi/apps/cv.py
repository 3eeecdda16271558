"""k-fold cross-validation of an app: fit a fresh task per fold, report per-fold metrics, mean and std.

The folds come from the task's `folds()` (stratified where the task gives labels): every row of the data
handed in is in exactly one fold's validation part. `luodi cv` hands in the whole dataset (or its training
part); tuning with tune.folds > 1 scores each trial with the same loop on the training part only, so the app's
validation split stays unseen. `fit_and_score` is the one fit + score of a fold (and of a one-split trial).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from luodi import atomic, crypto
from luodi.apps import registry
from luodi.apps.configs import AppRef, load_app
from luodi.apps.report import numbers
from luodi.config import AppConfig, config_fingerprint
from luodi.errors import BadRequest, ConfigError
from luodi.tasks import task_for

FoldMetrics = dict[str, float]


def cv(
    app: AppRef,
    folds: int = 5,
    progress: bool = True,
    train_only: bool = False,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """k-fold cross-validation: every row of the dataset is validated exactly once, by a model fit without it.

    `train_only` folds only the training part of data.split, so the validation split stays unseen (e.g. to
    compare with `luodi evaluate` on it later). Returns per-fold metrics, mean and std (see cross_validate).
    Each finished fold is recorded in runs/<app>/cv.json; `resume=True` skips the folds an interrupted CV of
    the same config finished.
    """
    cfg = load_app(app, overrides)
    task = task_for(cfg)
    data = task.read(None)
    if train_only:
        data, _ = task.split(data)
    state = registry.runs_root(cfg.train.output_dir) / cfg.name / "cv.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = config_fingerprint(cfg, folds=folds, train_only=train_only, rows=len(data))
    res = cross_validate(
        cfg, folds, data, progress=progress, state=state, fingerprint=fingerprint, resume=resume
    )
    res.update(app=cfg.name, scope="training part" if train_only else "whole dataset")
    return res


def fit_and_score(cfg: AppConfig, train: Any, valid: Any) -> FoldMetrics:
    """Fit a fresh task on `train` (its checkpoints in a throw-away folder) and score it on `valid`."""
    task = task_for(cfg)
    with tempfile.TemporaryDirectory(prefix="luodi-fold-") as d:
        task.fit(train, valid, Path(d), progress=False)
    return numbers(task.evaluate(valid))


def cross_validate(
    cfg: AppConfig,
    folds: int,
    data: Any = None,
    *,
    progress: bool = True,
    state: Path | None = None,
    fingerprint: str = "",
    resume: bool = False,
) -> dict[str, Any]:
    """Metrics of each fold's validation part, and their mean and (population) standard deviation.

    `data` defaults to the app's whole dataset. Returns {folds, rows, fold_sizes, per_fold, mean, std};
    the app's evaluate.metrics come first in `mean` and `std`. With `state` (a JSON file) each fold's metrics
    are written there as the fold finishes; `resume` skips the folds a run with the same `fingerprint` finished.
    """
    task = task_for(cfg)
    if not hasattr(task, "folds"):
        raise ConfigError(f"task {cfg.task} does not support cross-validation (it has no folds())")
    data = task.read(None) if data is None else data
    n = len(data)
    if folds < 2 or folds > n:
        raise ConfigError(f"'folds' must be between 2 and the number of rows ({n}); got {folds}")
    parts = task.folds(data, folds, cfg.train.seed)
    sizes = [len(va) for _, va in parts]
    if sum(sizes) != n:  # a task's folds() must validate every row exactly once
        raise ConfigError(f"task {cfg.task}: folds validate {sum(sizes)} rows, expected each of the {n} once")
    done = _finished_folds(state, fingerprint, folds) if resume else {}
    todo = [(i, p) for i, p in enumerate(parts) if i not in done]
    if progress:
        from rich.progress import track

        todo = track(todo, description=f"{folds}-fold cv" + (f" ({len(done)} done)" if done else ""))
    for i, (tr, va) in todo:
        done[i] = fit_and_score(cfg, tr, va)
        if state is not None:
            atomic.write_json(state, {"fingerprint": fingerprint, "folds": folds, "per_fold": done})
    per_fold = [done[i] for i in range(folds)]
    return {"folds": folds, "rows": n, "fold_sizes": sizes, "per_fold": per_fold, **_mean_std(cfg, per_fold)}


def _finished_folds(state: Path | None, fingerprint: str, folds: int) -> dict[int, FoldMetrics]:
    """Fold metrics a CV with the same fingerprint stored before it was interrupted; a 400 when there are none."""
    if state is None or not state.exists():
        raise BadRequest("nothing to resume: no interrupted CV of this app; run without --resume", param="resume")
    saved = crypto.read_json(state)
    if saved.get("fingerprint") != fingerprint or saved.get("folds") != folds:
        raise BadRequest(
            "nothing to resume: the stored CV used another config, --folds or --train-only; run without --resume",
            param="resume",
        )
    return {int(i): m for i, m in saved["per_fold"].items()}


def _mean_std(cfg: AppConfig, per_fold: list[FoldMetrics]) -> dict[str, dict[str, float]]:
    """Mean and std of each metric every fold has, evaluate.metrics first."""
    common = [k for k in per_fold[0] if all(k in f for f in per_fold)]
    keys = [k for k in cfg.evaluate.metrics if k in common] + [k for k in common if k not in cfg.evaluate.metrics]
    return {
        "mean": {k: float(np.mean([f[k] for f in per_fold])) for k in keys},
        "std": {k: float(np.std([f[k] for f in per_fold])) for k in keys},
    }
