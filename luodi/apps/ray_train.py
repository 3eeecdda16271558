"""`luodi train APP.yaml --backend ray --workers N`: the task's normal fit, run by N Ray Train workers.

The run itself (its folder, config.yaml, evaluation, metrics.json, report.html, manifest) is made here in the
driver exactly as for a local train (apps/train.py); only fit + save move into the workers. Each worker builds
the task from the same config and calls its `fit` on the same rows; the shared loop (train/torch_loop.py) sees
that it runs in a Ray Train worker and trains data-parallel (DDP over gloo, a shard of the rows per worker).
Rank 0 writes the checkpoints, the weights (`task.save`) and the epoch history; the driver then loads the saved
run, so what it evaluates is what `luodi serve` will load.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from luodi import atomic, crypto
from luodi.config import AppConfig
from luodi.errors import ConfigError
from luodi.settings import get_settings
from luodi.tasks import task_for
from luodi.train import CHECKPOINT_DIR
from luodi.train.ray_backend import check_workers, run_workers

HISTORY = "history.json"  # rank 0's per-epoch history, for the report's training curves
Fit = Callable[[Any, Any, Any, Path, Path, bool], None]  # (task, train, valid, checkpoint dir, save dir, progress)


def ray_blocker(cfg: AppConfig, task: Any) -> str | None:
    """Why this app cannot train on Ray (None: it can). Only a torch model trained by the shared loop from a
    DataLoader can be split over workers; anything else would train N identical copies."""
    if cfg.train.privacy:
        return "DP-SGD (train.privacy) accounts for one process seeing every example"
    if cfg.train.adversarial:
        return "train.adversarial crafts its examples with the model's gradients inside a step, which DDP averages"
    kind = getattr(task, "kind", None) or cfg.model.type
    if task.name == "image-classification":
        return None
    if task.name == "speech-recognition" and kind == "cnn":
        return None
    if task.name == "tabular" and kind == "mlp":
        return None
    what = f"task {task.name}" + (f" with model.type {kind}" if kind else "")
    return (
        f"{what} does not train one torch model on luodi's shared loop (Ray training covers image-classification, "
        "speech-recognition with model.type cnn and tabular with model.type mlp)"
    )


def check(cfg: AppConfig, task: Any, workers: int | None, address: str | None, callbacks: list[Any] | None) -> int:
    """The checks made before anything starts; returns the worker count (default 2)."""
    if why := ray_blocker(cfg, task):
        raise ConfigError(f"--backend ray: {why}; train without --backend ray (the default, local)", param="backend")
    if callbacks:
        raise ConfigError(
            "--backend ray trains in Ray workers, where this process's epoch callbacks cannot run; pass none",
            param="backend",
        )
    workers = 2 if workers is None else workers
    check_workers(workers, address)
    return workers


def ray_fit(workers: int, address: str | None) -> Fit:
    """A `Fit` that trains on `workers` Ray Train workers, then loads rank 0's saved model into `task`."""

    def fit(task: Any, train: Any, valid: Any, checkpoint_dir: Path, save_dir: Path, progress: bool) -> None:
        cfg = task.config
        history = Path(checkpoint_dir) / CHECKPOINT_DIR / "ray" / HISTORY

        def work(rank: int) -> None:  # in each worker
            worker_task = task_for(cfg)  # own copies of the rows: Ray hands them over read-only
            worker_task.fit(copy.deepcopy(train), copy.deepcopy(valid), checkpoint_dir, progress=progress)
            if rank == 0:
                worker_task.save(save_dir)
                atomic.write_json(history, {"history": worker_task.history})

        run_workers(
            work,
            workers=workers,
            storage=Path(checkpoint_dir) / CHECKPOINT_DIR / "ray",
            home=get_settings().home.resolve(),
            address=address,
        )
        task.load(save_dir)
        task.history = crypto.read_json(history)["history"]

    return fit
