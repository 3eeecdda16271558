"""k-fold cross-validation of an app: fit a fresh task per fold, report per-fold metrics, mean and std."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from luodi.config import AppConfig
from luodi.errors import ConfigError
from luodi.tasks import task_for


def cross_validate(
    cfg: AppConfig,
    folds: int,
    progress: bool = True,
    data: Any = None,
    on_fold: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Metrics of each fold's validation part, and their mean and standard deviation."""
    task = task_for(cfg)
    if not hasattr(task, "folds"):
        raise ConfigError(f"task {cfg.task} does not support cross-validation (it has no folds())")
    data = task.read(None) if data is None else data
    per_fold: list[dict[str, float]] = []
    parts = task.folds(data, folds, cfg.train.seed)
    from rich.progress import track

    it = track(list(enumerate(parts)), description=f"{folds}-fold cv") if progress else enumerate(parts)
    for i, (tr, va) in it:
        t = task_for(cfg)
        with tempfile.TemporaryDirectory(prefix="luodi-cv-") as d:
            t.fit(tr, va, Path(d), progress=False)
        m = {k: float(v) for k, v in t.evaluate(va).items() if isinstance(v, int | float)}
        per_fold.append(m)
        if on_fold:
            on_fold(i, m)
    keys = [k for k in per_fold[0] if all(k in f for f in per_fold)]
    return {
        "folds": folds,
        "per_fold": per_fold,
        "mean": {k: float(np.mean([f[k] for f in per_fold])) for k in keys},
        "std": {k: float(np.std([f[k] for f in per_fold])) for k in keys},
    }
