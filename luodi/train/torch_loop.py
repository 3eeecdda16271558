"""A small epoch loop shared by the torch-based tasks, readable top to bottom.

What it does for a task:
- trains `model` with AdamW or SGD with momentum (or the optimizer you pass) and an LR schedule computed per step
  (constant | cosine | onecycle = linear warmup then cosine), optional gradient clipping;
- with `privacy`, trains with DP-SGD instead (luodi.train.privacy: per-example clipping and noise on top of the
  same optimizer) and writes the epsilon spent to `run_dir/privacy.json`;
- shows a rich progress bar per epoch and prints one line of metrics per epoch;
- evaluates after each epoch, keeps the best weights (by `monitor`), stops early after `patience`
  epochs without improvement, or when `max_minutes` is used up;
- checkpoints to `run_dir/checkpoint/` every epoch: weights and optimizer state as safetensors plus a
  JSON state file, written crash-safely (new files first, then the JSON state swapped in with os.replace);
- resumes from that checkpoint when one exists (same run dir), continuing at the saved epoch and batch;
- on KeyboardInterrupt saves a checkpoint at the current batch and re-raises;
- calls `on_epoch(epoch, metrics)` (1-based epoch) after each epoch's checkpoint is written;
- inside a Ray Train worker (`--backend ray`, luodi.train.ray_backend) trains data-parallel: the model under DDP,
  a shard of the loader's rows per worker, the train loss averaged, rank 0's evaluation and files only.

The task supplies three things: a train loader (any iterable of batches, e.g. a DataLoader), a
`step_fn(model, batch) -> loss` and an `eval_fn(model) -> {metric: value}`. Randomness is seeded per
epoch (`seed * 1000 + epoch`), so shuffling and augmentation of an epoch are reproducible on resume.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load, load_model, save_file, save_model

from luodi import crypto
from luodi.atomic import atomic_path, write_json
from luodi.errors import ConfigError
from luodi.train import CHECKPOINT_DIR
from luodi.train.ray_backend import current_worker

STATE_FILE = "state.json"

StepFn = Callable[[torch.nn.Module, Any], torch.Tensor]
EvalFn = Callable[[torch.nn.Module], dict[str, float]]


@dataclass
class LoopConfig:
    """Knobs of the loop; `from_train` maps an App's `train:` section onto them."""

    epochs: int = 10
    lr: float = 1e-3
    optimizer: Literal["adamw", "sgd"] = "adamw"  # sgd: with momentum 0.9
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "onecycle"] = "cosine"
    warmup: float = 0.0  # fraction of all steps spent warming up linearly (onecycle uses 0.1 when 0)
    patience: int | None = 3  # epochs without improvement before stopping; None disables
    monitor: str = "loss"  # metric from eval_fn (or the train loss when there is no eval_fn)
    mode: Literal["min", "max"] = "min"
    max_minutes: float | None = None
    seed: int = 0
    grad_clip: float | None = None
    threads: int | None = None  # torch intra-op threads while training (None: leave as is)
    privacy: dict[str, Any] | None = None  # DP-SGD (luodi.train.privacy): epsilon, delta, max_grad_norm

    @classmethod
    def from_train(cls, train: Any, **overrides: Any) -> LoopConfig:
        """Build from luodi.config.TrainConfig (epochs, lr, early_stopping, seed, max_minutes)."""
        base = {
            "epochs": train.epochs,
            "lr": train.lr,
            "optimizer": getattr(train, "optimizer", None) or "adamw",
            "patience": train.early_stopping,
            "seed": train.seed,
            "max_minutes": train.max_minutes,
            "privacy": train.privacy.model_dump() if getattr(train, "privacy", None) else None,
        }
        base.update(overrides)
        return cls(**base)


@dataclass
class LoopResult:
    """What happened: metrics of the best epoch, when it was, and why the loop stopped."""

    best: dict[str, float]
    best_epoch: int
    epochs_run: int
    stopped: str  # completed | early_stopping | time_limit
    history: list[dict[str, float]] = field(default_factory=list)
    resumed: bool = False


def lr_factor(step: int, total: int, schedule: str, warmup: float) -> float:
    """Multiplier of the base LR at `step` of `total` steps."""
    if schedule == "onecycle" and warmup <= 0:
        warmup = 0.1
    warm_steps = int(warmup * total)
    if step < warm_steps:
        return (step + 1) / warm_steps
    if schedule == "constant":
        return 1.0
    if schedule in ("cosine", "onecycle"):
        progress = (step - warm_steps) / max(1, total - warm_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    raise ConfigError(f"train schedule '{schedule}' is unknown; expected constant, cosine or onecycle")


# --- crash-safe files ------------------------------------------------------------------------------


def save_weights(model: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Save a module's state (parameters and buffers) as safetensors, atomically."""
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata=metadata)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into `model`; a shape/name mismatch becomes a clear ConfigError."""
    try:
        if crypto.is_sealed(path):  # encrypted at rest: decrypted piece by piece into the model's tensors
            from luodi.train.streamed import load_streamed

            missing, unexpected = load_streamed(model, path)
        else:
            missing, unexpected = load_model(model, str(path), strict=False)
    except (crypto.DamagedFileError, crypto.EncryptionKeyError):
        raise  # (their messages name the file and the fix)
    except Exception as e:  # safetensors raises RuntimeError on shape mismatch
        raise ConfigError(
            f"weights in {path} do not fit this model ({e}); retrain or use the matching run"
        ) from e
    if missing or unexpected:
        raise ConfigError(
            f"weights in {path} do not fit this model (missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}); retrain or use the matching run"
        )


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able rest (no pickle)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_files(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# --- checkpoints -----------------------------------------------------------------------------------


class Checkpoint:
    """`run_dir/checkpoint/`: state.json names the weight files of the latest save; old files are removed."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / CHECKPOINT_DIR
        self.state_path = self.dir / STATE_FILE

    def exists(self) -> bool:
        return self.state_path.exists()

    def read_state(self) -> dict[str, Any]:
        try:
            return crypto.read_json(self.state_path)
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(
                f"checkpoint state {self.state_path} is unreadable ({e}); delete it to restart"
            ) from e

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tag = f"{state['step']:09d}"
        model_file, optim_file = f"model-{tag}.safetensors", f"optim-{tag}.safetensors"
        save_weights(model, self.dir / model_file)
        tensors, meta = _optimizer_to_files(optimizer)
        with atomic_path(self.dir / optim_file) as tmp:
            save_file(tensors, str(tmp))
        state = {**state, "model_file": model_file, "optim_file": optim_file, "optim_meta": meta}
        write_json(self.state_path, state)
        self._remove_unreferenced(state)

    def save_best(self, model: torch.nn.Module, step: int) -> str:
        """Write the best-so-far weights; the caller records the returned name in the next state save."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"best-{step:09d}.safetensors"
        save_weights(model, self.dir / name)
        return name

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        state = self.read_state()
        load_weights(model, self.dir / state["model_file"])
        _optimizer_from_files(optimizer, load(crypto.read_bytes(self.dir / state["optim_file"])), state["optim_meta"])
        return state

    def _remove_unreferenced(self, state: dict[str, Any]) -> None:
        keep = {state["model_file"], state["optim_file"], state.get("best_file"), STATE_FILE}
        for f in self.dir.iterdir():
            if f.name not in keep and f.suffix in (".safetensors", ".tmp"):
                f.unlink(missing_ok=True)


# --- the loop --------------------------------------------------------------------------------------


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if mode == "min" else value > best


def train_loop(
    model: torch.nn.Module,
    train_loader: Iterable[Any],
    step_fn: StepFn,
    eval_fn: EvalFn | None,
    run_dir: Path,
    cfg: LoopConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    console: Console | None = None,
) -> LoopResult:
    """Train `model` in place; on return it holds the best epoch's weights. See the module docstring."""
    console = console or Console(stderr=True)
    if cfg.mode not in ("min", "max"):
        raise ConfigError(f"loop mode '{cfg.mode}' is unknown; expected min or max")
    if optimizer is None and cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    if not isinstance(train_loader, Sized) or len(train_loader) == 0:
        raise ConfigError("the training data is empty (or has no length); check data.path and the split")
    if cfg.threads:
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
        try:
            return train_loop(
                model,
                train_loader,
                step_fn,
                eval_fn,
                run_dir,
                replace(cfg, threads=None),
                optimizer=optimizer,
                progress=progress,
                on_epoch=on_epoch,
                console=console,
            )
        finally:
            torch.set_num_threads(previous_threads)
    worker = current_worker()  # a Ray Train worker (`--backend ray`): DDP, a shard of the rows, rank 0 writes
    writer = worker is None or worker.writer
    if worker is not None:
        if cfg.privacy:
            raise ConfigError(
                "'train.privacy' cannot train with --backend ray: DP-SGD accounts for one process seeing every "
                "example; train without --backend ray",
                param="train.privacy",
            )
        train_loader = worker.shard(train_loader)
        progress = progress and worker.writer
        console = Console(stderr=True, soft_wrap=True, highlight=False)  # lines Ray forwards to the driver
    per_epoch = len(train_loader)
    total_steps = per_epoch * cfg.epochs
    ckpt = Checkpoint(run_dir)
    dp = None  # DP-SGD: the wrapped model steps, the private optimizer and Poisson-sampled batches
    if cfg.privacy:
        from luodi.train.privacy import private

        dp = private(model, optimizer, train_loader, cfg.privacy, cfg.epochs)
        optimizer, train_loader = dp.optimizer, dp.loader
    forward = dp.model if dp else model
    if worker is not None:
        forward = worker.prepare_model(model)  # DistributedDataParallel: gradients averaged over the workers

    # Resume state (or a fresh start).
    epoch, skip_batches, step = 0, 0, 0
    best_value: float | None = None
    best_metrics: dict[str, float] = {}
    best_epoch, bad_epochs, best_file = -1, 0, None
    history: list[dict[str, float]] = []
    resumed = False
    if ckpt.exists():
        st = ckpt.load(model, optimizer)
        epoch, skip_batches, step = st["epoch"], st["batch"], st["step"]
        best_value, best_metrics, best_epoch = st["best_value"], st["best_metrics"], st["best_epoch"]
        bad_epochs, best_file, history = st["bad_epochs"], st.get("best_file"), st["history"]
        resumed = True
        if dp and st.get("privacy_history"):  # what the interrupted run already spent still counts
            dp.engine.accountant.history = [tuple(h) for h in st["privacy_history"]]
        if st.get("stopped") == "early_stopping" or epoch >= cfg.epochs:
            if best_file:
                load_weights(model, ckpt.dir / best_file)
            if dp:
                dp.record(run_dir)
                dp.close()
            console.print(
                f"[dim]checkpoint in {ckpt.dir} is finished ({st.get('stopped')}); nothing to train[/dim]"
            )
            return LoopResult(
                best_metrics, best_epoch, epoch, st.get("stopped") or "completed", history, True
            )
        console.print(f"[dim]resuming from {ckpt.dir}: epoch {epoch + 1}, batch {skip_batches}[/dim]")

    def state(batch: int, stopped: str | None = None) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "batch": batch,
            "step": step,
            "best_value": best_value,
            "best_metrics": best_metrics,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "best_file": best_file,
            "history": history,
            "stopped": stopped,
            "config": asdict(cfg),
            "privacy_history": dp.history() if dp else None,
        }

    deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes else None
    stopped = "completed"
    bar = Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
        transient=True,
    )
    with bar:
        while epoch < cfg.epochs:
            torch.manual_seed(cfg.seed * 1000 + epoch)  # same shuffling/augmentation on resume
            task = bar.add_task("train", total=per_epoch, epoch=f"{epoch + 1}/{cfg.epochs}", loss="-")
            model.train()
            loss_sum, loss_n, position = 0.0, 0, skip_batches
            try:
                for batch_idx, batch in enumerate(train_loader):
                    if batch_idx < skip_batches:  # resumed mid-epoch: these were already trained on
                        bar.advance(task)
                        continue
                    position = batch_idx
                    factor = lr_factor(step, total_steps, cfg.schedule, cfg.warmup)
                    for group in optimizer.param_groups:
                        group["lr"] = group["initial_lr"] * factor
                    loss = step_fn(forward, batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip and not dp:  # DP-SGD clips each example's gradient itself
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    step += 1
                    position = batch_idx + 1
                    loss_sum += float(loss.detach())
                    loss_n += 1
                    bar.update(task, advance=1, loss=f"{loss_sum / loss_n:.4f}")
                    late = bool(deadline) and time.monotonic() > deadline
                    if worker is not None and deadline:  # every worker stops at the same step
                        late = worker.any(late)
                    if late:
                        stopped = "time_limit"
                        break
                position = per_epoch  # all batches done (or time is up): what remains is evaluation
                bar.remove_task(task)
                skip_batches = 0

                metrics = {"epoch": float(epoch + 1), "train_loss": loss_sum / max(1, loss_n)}
                if worker is not None:
                    metrics["train_loss"] = worker.mean(metrics["train_loss"])
                if eval_fn is not None and writer:
                    model.eval()
                    with torch.no_grad():
                        metrics.update({k: float(v) for k, v in eval_fn(model).items()})
                    model.train()
                if worker is not None:  # rank 0's evaluation decides for all (same early stopping)
                    metrics = worker.broadcast(metrics)
            except KeyboardInterrupt:
                if writer:
                    ckpt.save(model, optimizer, state(position))
                console.print(
                    f"[yellow]interrupted: checkpoint saved to {ckpt.dir}; run again to resume[/yellow]"
                )
                raise
            if cfg.monitor not in metrics and cfg.monitor != "loss":
                raise ConfigError(f"monitored metric '{cfg.monitor}' not among {sorted(metrics)}")
            value = metrics.get(cfg.monitor, metrics["train_loss"])
            history.append(metrics)
            if _improved(value, best_value, cfg.mode):
                best_value, best_metrics, best_epoch, bad_epochs = value, metrics, epoch, 0
                best_file = ckpt.save_best(model, step) if writer else None
            else:
                bad_epochs += 1
            if progress:
                shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "epoch")
                star = " *" if best_epoch == epoch else ""
                console.print(f"epoch {epoch + 1}/{cfg.epochs}  {shown}{star}")
            epoch += 1
            if cfg.patience and bad_epochs >= cfg.patience and epoch < cfg.epochs:
                stopped = "early_stopping"
            final = stopped != "completed" or epoch >= cfg.epochs
            if writer:
                ckpt.save(model, optimizer, state(0, stopped if final else None))
            if on_epoch:  # after the checkpoint: a callback may raise KeyboardInterrupt to stop the run
                on_epoch(epoch, {k: v for k, v in metrics.items() if k != "epoch"})
            if stopped != "completed":
                if progress:
                    console.print(f"[dim]stopped after epoch {epoch}: {stopped.replace('_', ' ')}[/dim]")
                break

    if best_file:
        load_weights(model, ckpt.dir / best_file)
    if dp:
        dp.record(run_dir)
        dp.close()
    return LoopResult(best_metrics, best_epoch, epoch, stopped, history, resumed)
