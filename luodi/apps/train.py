"""Train an app into runs/<app>/<version>/ (or finish an interrupted run), leaving a verified run behind."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from luodi import atomic, crypto
from luodi.apps import registry
from luodi.apps.configs import AppRef, config_yaml, load_app
from luodi.apps.registry import RunInfo
from luodi.apps.report import add_importance, missing_metrics, select_metrics, write_report
from luodi.config import AppConfig
from luodi.errors import ConfigError
from luodi.tasks import task_for
from luodi.tasks.base import EpochCallback

ELAPSED = "elapsed.json"  # training time of interrupted attempts, so that resumes add up


def train(
    app: AppRef,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[EpochCallback] | None = None,
    log: Callable[[str], None] | None = None,
    overrides: dict[str, Any] | None = None,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
) -> RunInfo:
    """Train an app into a new run (or continue the newest unfinished one with resume=True).

    Writes runs/<app>/<version>/: config.yaml, weights, preprocessing metadata, metrics.json, report.html,
    manifest.json (last). Ctrl-C marks the run interrupted; `resume=True` continues from its checkpoint.
    `overrides` ({dotted path: value}) change the config for this run; its config.yaml records them.
    `backend="ray"` trains torch tasks data-parallel on `workers` Ray Train workers (a local Ray, or `address`);
    the run's folder and files are the same (apps/ray_train.py).
    """
    say = log or (lambda m: None)
    cfg = load_app(app, overrides)
    task = task_for(cfg)
    if cfg.train.refit and (why := task.refit_blocker()):
        raise ConfigError(f"'train.refit': {why}; remove train.refit or change the model")
    if cfg.train.privacy and (why := task.privacy_blocker()):
        raise ConfigError(f"'train.privacy': {why}; remove train.privacy or change the app", param="train.privacy")
    fit = _fit_here
    if backend == "ray":
        from luodi.apps.ray_train import check, ray_fit

        fit = ray_fit(check(cfg, task, workers, address, callbacks), address)
    elif backend != "local":
        raise ConfigError(f"--backend '{backend}' is unknown; use local or ray", param="backend")
    elif workers is not None or address:
        raise ConfigError("--workers and --address apply to --backend ray; add --backend ray", param="backend")
    run = _start_run(cfg, resume, say)
    if callbacks and hasattr(task, "callbacks"):
        task.callbacks = list(callbacks)
    elapsed_file = run.path / ELAPSED
    before = crypto.read_json(elapsed_file)["train_seconds"] if elapsed_file.exists() else 0.0
    t0 = time.perf_counter()
    try:
        metrics = _fit_and_record(cfg, task, run, progress, say, lambda: before + time.perf_counter() - t0, fit)
    except KeyboardInterrupt:
        atomic.write_json(elapsed_file, {"train_seconds": before + time.perf_counter() - t0})
        registry.set_status(cfg.name, run.version, "interrupted")
        say(f"interrupted: resume with `luodi train APP.yaml --resume` (run {run.version})")
        raise
    except BaseException:
        registry.set_status(cfg.name, run.version, "failed")
        raise
    return registry.set_status(cfg.name, run.version, "done", metrics)


def _start_run(cfg: AppConfig, resume: bool, say: Callable[[str], None]) -> RunInfo:
    """The newest unfinished run with the same config (resume), else a new run; its config.yaml written."""
    text = config_yaml(cfg)
    run = registry.resumable_run(cfg.name) if resume else None
    if run is not None:
        old = run.path / "config.yaml"
        if old.exists() and crypto.read_text(old) != text:
            raise ConfigError(
                f"the app config changed since run {run.version} was interrupted (compare with its "
                f"{old}; resume with the same file and --set values) or train without --resume to start a new run"
            )
        registry.set_status(cfg.name, run.version, "running")
        say(f"resuming {cfg.name} {run.version} from {run.path}")
    else:
        if resume:
            say(f"no unfinished run of '{cfg.name}' to resume: starting a new run")
        run = registry.create_run(cfg.name, cfg.task, cfg.train.output_dir and str(Path(cfg.train.output_dir)))
        say(f"training {cfg.name} {run.version} into {run.path}")
    atomic.write_text(run.path / "config.yaml", text)
    return run


def _fit_here(task: Any, train: Any, valid: Any, checkpoint_dir: Path, save_dir: Path, progress: bool) -> None:
    """Fit in this process (the local backend) and save the model into the run."""
    task.fit(train, valid, checkpoint_dir, progress=progress)
    task.save(save_dir)


def _fit_and_record(
    cfg: AppConfig,
    task: Any,
    run: RunInfo,
    progress: bool,
    say: Callable[[str], None],
    seconds: Callable[[], float],
    fit: Callable[..., None] = _fit_here,
) -> dict[str, float]:
    """Fit on the train split, score the validation split, refit on all rows if asked, and write the run's
    files (manifest.json last). Returns the metrics the runs table keeps (with train_seconds)."""
    data = task.read(None)
    tr, va = task.split(data)
    fit(task, tr, va, run.path, run.path, progress)
    ev = task.evaluate(va)
    metrics = select_metrics(cfg, ev)
    privacy = run.path / "privacy.json"  # written by DP-SGD training (luodi.train.privacy)
    if cfg.train.privacy and privacy.exists():
        spent = crypto.read_json(privacy)
        metrics["dp_epsilon"] = spent["epsilon_spent"]
        say(f"differential privacy: epsilon {spent['epsilon_spent']} spent of {spent['epsilon_target']} "
            f"(delta {spent['delta']:.2g})")
    for m in missing_metrics(cfg, metrics):
        say(f"note: evaluate.metrics '{m}' is not computed by task {cfg.task}; see metrics.json")
    info = {"app": cfg.name, "version": run.version, "task": cfg.task, "train_rows": len(tr), "valid_rows": len(va)}
    if "dp_epsilon" in metrics:
        info["privacy"] = crypto.read_json(privacy)
    if cfg.train.refit:
        say(f"validated; refitting on all {len(data)} rows (train + validation) for the served model")
        final = task_for(cfg)  # same settings; its checkpoints apart from the first fit's
        fit(final, data, va, run.path / registry.CHECKPOINT_DIR / "refit", run.path, progress)
        info["refit_rows"] = len(data)
    info["train_seconds"] = round(seconds(), 2)
    atomic.write_json(run.path / "metrics.json", {"valid": metrics, **info})
    add_importance(ev, task, va)
    title = f"{cfg.name} {run.version} — validation"
    write_report(run.path / "report.html", title, ev, getattr(task, "history", []), info)
    registry.delete_checkpoint(run.path)
    (run.path / ELAPSED).unlink(missing_ok=True)
    if why := registry.write_gate(run.path, cfg.evaluate.goal, metrics):  # in the manifest: held back until forced
        say(f"not served automatically: {run.version} {why} (`luodi promote {cfg.name} {run.version} --force`)")
    registry.write_manifest(run.path, {"app": cfg.name, "version": run.version, "task": cfg.task})
    return {**metrics, "train_seconds": info["train_seconds"]}
