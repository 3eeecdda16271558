"""k-fold cross-validation of an app: fit a fresh task per fold, report per-fold metrics, mean and std.

The folds come from the task's `folds()` (stratified where the task gives labels): every row of the data
handed in is in exactly one fold's validation part. `luodi cv` hands in the whole dataset; tuning hands in
the training part only, so the app's validation split stays unseen.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from luodi import atomic
from luodi.config import AppConfig
from luodi.errors import BadRequest, ConfigError


def _finished_folds(state: Path | None, fingerprint: str, folds: int) -> dict[int, dict[str, float]]:
    """Fold metrics a CV with the same fingerprint stored before it was interrupted; a 400 when there are none."""
    if state is None or not state.exists():
        raise BadRequest("nothing to resume: no interrupted CV of this app; run without --resume", param="resume")
    saved = json.loads(state.read_text())
    if saved.get("fingerprint") != fingerprint or saved.get("folds") != folds:
        raise BadRequest(
            "nothing to resume: the stored CV used another config, --folds or --train-only; run without --resume",
            param="resume",
        )
    return {int(i): m for i, m in saved["per_fold"].items()}


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def cross_validate(
    cfg: AppConfig,
    folds: int,
    task_for: Callable[[AppConfig], Any],
    progress: bool = True,
    data: Any = None,
    on_fold: Callable[[int, dict[str, float]], None] | None = None,
    state: Path | None = None,
    fingerprint: str = "",
    resume: bool = False,
) -> dict[str, Any]:
    """Metrics of each fold's validation part, and their mean and (population) standard deviation.

    `task_for(cfg)` makes a fresh task (luodi.tasks.task_for; passed in so this loop stays below the tasks).

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
    from rich.progress import track

    todo = [(i, p) for i, p in enumerate(parts) if i not in done]
    it = track(todo, description=f"{folds}-fold cv ({len(done)} done)" if done else f"{folds}-fold cv")
    for i, (tr, va) in it if progress else todo:
        t = task_for(cfg)
        with tempfile.TemporaryDirectory(prefix="luodi-cv-") as d:
            t.fit(tr, va, Path(d), progress=False)
        done[i] = _numbers(t.evaluate(va))
        if state is not None:
            atomic.write_json(state, {"fingerprint": fingerprint, "folds": folds, "per_fold": done})
        if on_fold:
            on_fold(i, done[i])
    per_fold = [done[i] for i in range(folds)]
    common = [k for k in per_fold[0] if all(k in f for f in per_fold)]
    keys = [k for k in cfg.evaluate.metrics if k in common] + [k for k in common if k not in cfg.evaluate.metrics]
    return {
        "folds": folds,
        "rows": n,
        "fold_sizes": sizes,
        "per_fold": per_fold,
        "mean": {k: float(np.mean([f[k] for f in per_fold])) for k in keys},
        "std": {k: float(np.std([f[k] for f in per_fold])) for k in keys},
    }
