"""Data-parallel training on Ray Train: `luodi train APP.yaml --backend ray --workers N`.

Two halves, both here so that the shared loop (torch_loop.py) stays free of Ray:
- `run_workers(work, ...)` starts Ray (a local `ray.init()` or a cluster's `address`) and a Ray Train
  `TorchTrainer` of N CPU workers joined in one torch process group (gloo). Each worker calls `work(rank)`; the
  caller (luodi.apps) makes that the task's normal fit, so no task knows about Ray.
- `current_worker()` is what the loop asks: None in a normal process; inside a Ray Train worker a `Worker` that
  wraps the model in DistributedDataParallel (`ray.train.torch.prepare_model`), shards the loader with a
  DistributedSampler, and reduces the loop's numbers across workers. Only rank 0 evaluates, prints and writes
  files; the others receive its metrics, so every worker takes the same early-stopping decisions.

Why the global batch stays `train.batch_size` (each worker takes batch_size / N): gradients averaged by DDP over N
shards of size B/N equal one step on B rows, so the learning rate, the schedule's step count per epoch and the
quality match a 1-worker run; N workers only share the work of each step.
Ray is imported lazily: importing this module costs nothing where Ray is not installed.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler

from luodi.errors import ConfigError, LuodiError

FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "PYTHONPATH")
_WORKER: Worker | None = None  # set while a Ray Train worker runs `work`


@dataclass
class Worker:
    """This process's place in the Ray Train worker group and the collectives the loop needs."""

    rank: int
    size: int

    @property
    def writer(self) -> bool:
        """Rank 0 alone evaluates, prints and writes checkpoints and run files."""
        return self.rank == 0

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model wrapped in DistributedDataParallel (its gradients averaged over the workers each step)."""
        from ray.train.torch import prepare_model

        return prepare_model(model, move_to_device=False)

    def shard(self, loader: Any) -> ShardedLoader:
        """This worker's share of a DataLoader: 1/N of the rows each epoch, batches of batch_size / N."""
        return ShardedLoader(loader, self.rank, self.size)

    def mean(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return float(t) / self.size

    def any(self, flag: bool) -> bool:
        """True on every worker when it is on one (a time limit must stop all of them at the same step)."""
        t = torch.tensor([int(flag)])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value of `obj` on every worker."""
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def current_worker() -> Worker | None:
    """The Ray Train worker this code runs in, or None (a normal, single-process training)."""
    return _WORKER


class ShardedLoader:
    """A DataLoader rebuilt over a DistributedSampler. Every worker gets the same number of batches (DDP needs
    each to step together). The shuffle of an epoch is drawn from torch's RNG, which the loop seeds per epoch
    with the same value on every worker: all workers agree on the permutation, and it is reproducible on resume."""

    def __init__(self, loader: Any, rank: int, size: int):
        if not isinstance(loader, DataLoader):
            raise ConfigError(
                f"--backend ray shards a torch DataLoader; this task trains from a {type(loader).__name__}: "
                "train it without --backend ray"
            )
        outer = loader.batch_sampler if loader.batch_size is not None else loader.sampler
        if not isinstance(outer, BatchSampler):
            raise ConfigError("--backend ray needs a batched DataLoader; train this task without --backend ray")
        inner = outer.sampler
        self.shuffle = isinstance(inner, RandomSampler)
        self.sampler = DistributedSampler(loader.dataset, num_replicas=size, rank=rank, shuffle=self.shuffle)
        per_worker = max(1, math.ceil(outer.batch_size / size))
        batches = BatchSampler(self.sampler, per_worker, drop_last=outer.drop_last)
        if loader.batch_size is None:  # the dataset is indexed by a whole batch of indices at once
            self.loader = DataLoader(loader.dataset, sampler=batches, batch_size=None, collate_fn=loader.collate_fn)
        else:
            self.loader = DataLoader(loader.dataset, batch_sampler=batches, collate_fn=loader.collate_fn)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        if self.shuffle:
            self.sampler.set_epoch(int(torch.randint(0, 2**31 - 1, ())))
        return iter(self.loader)


def worker_env(home: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The env vars every worker starts with: this process's LUODI_* (encryption key, datasets) and the offline
    switches, with LUODI_HOME pinned to the resolved home, so the workers write into the same run folder."""
    environ = dict(os.environ if environ is None else environ)
    env = {k: v for k, v in environ.items() if k.startswith("LUODI_") or k in FORWARDED_ENV}
    env["LUODI_HOME"] = str(home)
    return env


def check_workers(workers: int, address: str | None = None) -> None:
    """Before Ray starts: at least one worker, and (for the local Ray that will start) no more than the CPUs."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})", param="workers")
    ray = sys.modules.get("ray")
    if not (address or os.environ.get("RAY_ADDRESS") or (ray and ray.is_initialized())):
        _check_cpus(workers, os.cpu_count() or 1)


def _check_cpus(workers: int, cpus: int) -> None:
    if workers > cpus:
        raise ConfigError(
            f"--workers {workers} is more than the {cpus} CPUs Ray sees (one per worker); use --workers {cpus} "
            "or fewer, or a cluster with more CPUs (--address)",
            param="workers",
        )


def run_workers(
    work: Callable[[int], None],
    *,
    workers: int,
    storage: Path,
    home: Path,
    address: str | None = None,
) -> None:
    """Run `work(rank)` on `workers` Ray Train workers (one CPU each, DDP over gloo) and wait for them.

    Starts a local Ray without the dashboard when none is running (and stops it afterwards), or joins `address`
    (`auto`, `ray://head:10001`). Ray Train's own files go under `storage`. A worker's error is raised here as
    itself when it is a luodi error (a bad config), else as a ConfigError naming the worker's failure.
    """
    check_workers(workers, address)
    try:
        import ray
        from ray.train import LoggingConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError as e:
        raise ConfigError(
            "--backend ray needs Ray Train: install it with `pip install 'luodi[ray]'`", param="backend"
        ) from e
    started = False
    if not ray.is_initialized():
        ray.init(
            address=address or None,
            include_dashboard=False,
            logging_level=logging.ERROR,
            runtime_env={"env_vars": worker_env(home)},
        )
        started = True
    try:
        _check_cpus(workers, int(ray.cluster_resources().get("CPU", 0)))
        storage.mkdir(parents=True, exist_ok=True)
        trainer = TorchTrainer(
            _train_fn,
            train_loop_config={"work": work},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
            torch_config=TorchConfig(backend="gloo"),
            run_config=RunConfig(
                name=f"train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
                storage_path=str(storage),
                # quiet: Ray Train's INFO lines, and the state-API warnings that the missing dashboard causes
                logging_config=LoggingConfig(log_level="ERROR"),
            ),
        )
        try:
            trainer.fit()
        except Exception as e:
            raise _worker_error(e) from e
    finally:
        if started:
            ray.shutdown()


def _train_fn(config: dict[str, Any]) -> None:
    """Runs in each Ray Train worker, in the torch process group TorchTrainer made (a module-level function, so
    that Ray imports it here rather than copying it: `_WORKER` is this module's global, which the loop reads)."""
    global _WORKER
    import ray.train

    ctx = ray.train.get_context()
    _WORKER = Worker(ctx.get_world_rank(), ctx.get_world_size())
    try:
        config["work"](_WORKER.rank)
    finally:
        _WORKER = None


def _worker_error(e: Exception) -> Exception:
    """The first worker's own exception where Ray kept it (a luodi error keeps its message and field)."""
    failures = getattr(e, "worker_failures", None) or {}
    for rank in sorted(failures):
        cause = failures[rank]
        while cause is not None and not isinstance(cause, LuodiError):
            cause = cause.__cause__ or getattr(cause, "cause", None)
        if isinstance(cause, LuodiError):
            return cause
    first = next(iter(failures.values()), e) if failures else e
    return ConfigError(f"Ray Train stopped: {str(first).strip().splitlines()[-1] if str(first) else type(first)}")
