"""`luodi federated APP.yaml`: federated averaging (Flower's FedAvg) of a table app's MLP over simulated clients,
each holding one shard of the training rows (iid, or label-skewed by Dirichlet(alpha): luodi.data.federated_split),
compared with the same model trained centrally. The result is a normal run (same files as `luodi train`, plus
federated.json), so predict / serve / evaluate use it unchanged.

Why in-process and not `flwr.simulation`: Flower's simulation engine needs Ray, a heavy dependency whose workers
each hold a copy of the model and data. Here Flower's own server loop (`flwr.server.Server`: configure, fit,
aggregate, evaluate per round), its `FedAvg` strategy (weighted average by rows) and `NumPyClient`s run in one
process, one client at a time, through a small in-process `ClientProxy`: 100 clients cost their row indices only.
Each client trains its local epochs with the task's own MLP, encoding and loss on luodi.train.torch_loop (with
--dp: DP-SGD, luodi.train.privacy), exactly as `luodi train` does on the whole table. With SGD clients (and no
--dp) the strategy is SCAFFOLD: FedAvg plus control variates against client drift (luodi.apps.federation).

What is shared before training: the preprocessing (standardization means, one-hot categories) and the class list
are fitted on the training rows, as a deployment would agree them beforehand (or compute them with federated
statistics); no client ever sends rows.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from luodi import atomic, crypto
from luodi.apps import registry
from luodi.apps.configs import AppRef, config_yaml, load_app
from luodi.apps.registry import RunInfo
from luodi.apps.report import select_metrics, write_report
from luodi.config import AppConfig
from luodi.errors import BadRequest, ConfigError
from luodi.evaluate.calibration import fit_calibrator
from luodi.options.strict import Strict
from luodi.tasks import task_for

FEDERATED_FILE = "federated.json"


class FederatedSettings(Strict):
    """How the federation is simulated (the CLI's options; errors name the option)."""

    clients: int = Field(10, ge=1, le=10_000, description="simulated clients, each holding one shard of the rows")
    rounds: int = Field(20, ge=1, le=1000, description="FedAvg rounds (each: clients train, the server averages)")
    alpha: float | None = Field(
        None, gt=0, description="Dirichlet concentration of the label-skewed split (small: skewed); None: iid")
    local_epochs: int = Field(1, ge=1, le=100, description="epochs each client trains on its shard per round")
    fraction: float = Field(1.0, gt=0, le=1, description="share of the clients that train in each round")
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="the clients' learning rate over the rounds: cosine decay to 5 % in the last round, "
        "or constant")
    strategy: Literal["auto", "fedavg", "scaffold"] = Field(
        "auto", description="fedavg (Flower's FedAvg), scaffold (FedAvg plus SCAFFOLD's control variates, which "
        "correct each client's drift towards its own label mix; SGD clients without --dp), or auto: scaffold where "
        "it applies (train.optimizer: sgd, no --dp), else fedavg")
    dp: bool = Field(False, description="clients train with DP-SGD under the app's train.privacy budget")
    centralized: bool = Field(True, description="also train the same model on all rows, for comparison")
    seed: int | None = Field(None, description="seed of the split and of client sampling (default: train.seed)")


OPTION_NAMES = {"alpha": "--non-iid", "local_epochs": "--local-epochs", "lr_schedule": "--lr-schedule"}


def resolve_strategy(opts: FederatedSettings, cfg: AppConfig) -> str:
    """'scaffold' or 'fedavg'. SCAFFOLD's client correction is a gradient term and its control variate is the
    client's displacement over its SGD steps: both assume plain (momentum) SGD steps. DP-SGD would clip and noise the
    correction with the gradient, and AdamW's steps are not proportional to the gradient: auto picks SCAFFOLD only
    for SGD clients without DP, and asking for it otherwise is an error naming the option."""
    sgd = cfg.train.optimizer == "sgd"
    if opts.strategy == "auto":
        return "scaffold" if sgd and not opts.dp else "fedavg"
    if opts.strategy == "scaffold" and (opts.dp or not sgd):
        why = "--dp" if opts.dp else f"train.optimizer {cfg.train.optimizer or 'adamw'}"
        raise ConfigError(f"--strategy scaffold needs plain SGD clients (train.optimizer: sgd, no --dp); this run "
                          f"has {why}: use --strategy fedavg or auto", param="--strategy")
    return opts.strategy


def settings(**values: Any) -> FederatedSettings:
    """FederatedSettings from the CLI's / API's values; a bad one becomes BadRequest naming its option."""
    try:
        return FederatedSettings(**values)
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "options"
        opt = OPTION_NAMES.get(field, f"--{field.replace('_', '-')}")
        raise BadRequest(f"{opt}: {err['msg']} (got {err.get('input')!r})", param=opt) from None


def _blocker(cfg: AppConfig, task: Any) -> str | None:
    """Why this app cannot train federated (None: it can). Only a table app's MLP alone is averaged."""
    if cfg.task != "tabular":
        return (f"'task': federated learning trains table apps whose model is the MLP alone (task: tabular, "
                f"model.type: mlp); this app's task is {cfg.task}")
    others = [m for m, w in task.weights.items() if w > 0 and m != "mlp"]
    if others:
        return (f"'model.type': federated learning averages the MLP member only and this model also has "
                f"{', '.join(others)}; set model.type: mlp (--set model.type=mlp)")
    if task.opts.inner_folds:
        return "'model.options.inner_folds': cross-fitted copies cannot be federated; set it to 0 (--set " \
               "model.options.inner_folds=0)"
    if cfg.train.resample != "none":
        return "'train.resample': resampling needs every row in one place; remove it"
    return None


def federated(
    app: AppRef,
    *,
    clients: int = 10,
    rounds: int = 20,
    alpha: float | None = None,
    local_epochs: int = 1,
    fraction: float = 1.0,
    lr_schedule: str = "cosine",
    strategy: str = "auto",
    dp: bool = False,
    centralized: bool = True,
    seed: int | None = None,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> RunInfo:
    """Train the app's MLP by FedAvg over `clients` simulated clients for `rounds` rounds and store the result
    as a new run; its metrics.json holds the validation metrics, federated.json the per-round history and the
    centralized comparison. See the module docstring."""
    say = log or (lambda m: None)
    opts = settings(clients=clients, rounds=rounds, alpha=alpha, local_epochs=local_epochs, fraction=fraction,
                    lr_schedule=lr_schedule, strategy=strategy, dp=dp, centralized=centralized, seed=seed)
    cfg = load_app(app, overrides)
    task = task_for(cfg)
    if why := _blocker(cfg, task):
        raise ConfigError(why, param=why.split("'")[1])
    if opts.dp and cfg.train.privacy is None:
        raise ConfigError("--dp needs the budget in 'train.privacy' ({epsilon, delta, max_grad_norm}); e.g. --set "
                          "'train.privacy={epsilon: 1.0}'", param="train.privacy")
    if cfg.train.privacy is not None and not opts.dp:
        raise ConfigError("'train.privacy' is set: pass --dp to train the clients with DP-SGD, or remove it",
                          param="train.privacy")
    if cfg.train.refit:
        say("note: train.refit is ignored: a federated model is the average the clients trained, never refitted")
    try:
        from luodi.apps.federation import Federation  # Flower, torch: only when a federation runs
    except ImportError as e:
        raise ConfigError(f"federated learning needs Flower ({e}): pip install --no-deps flwr==1.42.0 and its "
                          "imports (docs/federated.md, Install)") from e

    algorithm = resolve_strategy(opts, cfg)
    data = task.read(None)
    tr, va = task.split(data)
    fed = Federation(cfg, task, tr, va, opts, scaffold=algorithm == "scaffold")
    say(f"{opts.clients} clients, {'iid' if opts.alpha is None else f'Dirichlet({opts.alpha})'} split of "
        f"{len(tr)} training rows (label skew {fed.skew:.3f}; shard sizes {fed.sizes[0]}..{fed.sizes[-1]}); "
        f"{fed.strategy_name}")
    base = None
    if opts.centralized:
        say("training the same model centrally for comparison")
        base = _centralized(cfg, tr, va)
        say(f"centralized: accuracy {base['accuracy']:.4f}")
    run = registry.create_run(cfg.name, cfg.task, cfg.train.output_dir and str(Path(cfg.train.output_dir)))
    atomic.write_text(run.path / "config.yaml", config_yaml(cfg))
    say(f"federated training {cfg.name} {run.version} into {run.path}")
    t0 = time.perf_counter()
    try:
        history = fed.run(say)
        metrics = _record(cfg, task, fed, run, tr, va, history, base, opts, time.perf_counter() - t0)
    except BaseException:
        registry.set_status(cfg.name, run.version, "failed")
        raise
    return registry.set_status(cfg.name, run.version, "done", metrics)


def _centralized(cfg: AppConfig, tr: Any, va: Any) -> dict[str, float]:
    """The same app trained on all training rows in one place (no privacy), scored on the validation split."""
    plain = cfg.model_copy(update={"train": cfg.train.model_copy(update={"privacy": None, "refit": False})})
    task = task_for(plain)
    with tempfile.TemporaryDirectory(prefix="luodi-central-") as tmp:
        t0 = time.perf_counter()
        task.fit(tr, va, Path(tmp), progress=False)
        seconds = time.perf_counter() - t0
    ev = select_metrics(plain, task.evaluate(va))
    return {**ev, "train_seconds": round(seconds, 2)}


def _record(cfg: AppConfig, task: Any, fed: Any, run: RunInfo, tr: Any, va: Any, history: list[dict[str, Any]],
            base: dict[str, float] | None, opts: FederatedSettings, seconds: float) -> dict[str, float]:
    """The run's files, as `luodi train` writes them (manifest.json last), plus federated.json."""
    fed.finish(task)  # the averaged weights into the task's MLP
    if task.objective == "binary":  # as TabularTask.fit: calibration and fairness thresholds on validation
        raw_valid = task.encode_ordinal(va)
        raw = task._raw_proba(va)[:, task.positive]
        task.calibrator = fit_calibrator(raw, (task._target(raw_valid) == task.positive).astype(int),
                                         task.opts.calibration)
        task._fit_fairness(va, raw)
    task.history = [{"epoch": h["round"], **{k: v for k, v in h.items() if k != "round"}, "stage": "federated"}
                    for h in history]
    task.save(run.path)
    ev = task.evaluate(va)
    metrics = select_metrics(cfg, ev)
    summary = {
        "rounds": opts.rounds, "clients": opts.clients, "alpha": opts.alpha, "local_epochs": opts.local_epochs,
        "fraction": opts.fraction, "lr_schedule": opts.lr_schedule,
        "strategy": fed.strategy_name, "flwr": _flwr_version(),
        "split": "iid" if opts.alpha is None else "dirichlet", "label_skew": round(fed.skew, 4),
        "shard_rows": fed.sizes, "per_round": history,
        "federated": {"accuracy": metrics.get("accuracy")},
        "centralized": base, "train_seconds": round(seconds, 2),
    }
    if base and "accuracy" in base and metrics.get("accuracy") is not None:
        summary["accuracy_ratio"] = round(metrics["accuracy"] / base["accuracy"], 4)
        target = 0.99 * base["accuracy"]
        summary["rounds_to_99pct"] = next((h["round"] for h in history if h.get("accuracy", 0) >= target), None)
    if opts.dp:
        summary["privacy"] = fed.privacy_summary()
        metrics["dp_epsilon"] = summary["privacy"]["epsilon_max"]
    atomic.write_json(run.path / FEDERATED_FILE, summary)
    info = {"app": cfg.name, "version": run.version, "task": cfg.task, "train_rows": len(tr), "valid_rows": len(va),
            "federated": {k: summary[k] for k in ("clients", "rounds", "alpha", "local_epochs", "label_skew")},
            "train_seconds": round(seconds, 2)}
    if base:
        info["centralized_accuracy"] = base.get("accuracy")
        info["federated_vs_centralized"] = summary.get("accuracy_ratio")
    if opts.dp:
        info["privacy"] = summary["privacy"]
    atomic.write_json(run.path / "metrics.json", {"valid": metrics, **info})
    title = f"{cfg.name} {run.version} — federated ({opts.clients} clients, {opts.rounds} rounds) — validation"
    write_report(run.path / "report.html", title, ev, task.history, info)
    registry.write_manifest(run.path, {"app": cfg.name, "version": run.version, "task": cfg.task,
                                       "federated": True})
    return {**metrics, "train_seconds": info["train_seconds"]}


def _flwr_version() -> str:
    from importlib import metadata

    return metadata.version("flwr")


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A federated run's federated.json."""
    return crypto.read_json(Path(run_dir) / FEDERATED_FILE)
