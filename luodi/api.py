"""The public Python API of luodi apps. The CLI (luodi.cli.apps) and HTTP routes (luodi.serve.apps_routes)
only call these functions: train, evaluate, predict, tune, cv, list_runs, load_app, ensure_demo_apps.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from luodi import atomic
from luodi.apps import registry
from luodi.config import AppConfig, apply_overrides, config_fingerprint, load_app_config
from luodi.errors import BadRequest, ConfigError, LuodiError, NotFound
from luodi.apps.registry import RunInfo
from luodi.tasks import TASKS, task_for
from luodi.tasks.base import EpochCallback

DEMO_DIR = Path(__file__).parent / "demo"
AppRef = str | Path | AppConfig | dict
_cache: dict[tuple[str, str], Predictor] = {}
_cache_lock = threading.Lock()


# ---- configs --------------------------------------------------------------------------------------------


def load_app(app: AppRef, overrides: dict[str, Any] | None = None) -> AppConfig:
    """An AppConfig from a YAML path, a dict, a trained app's name (its latest run) or a demo app's name,
    with `overrides` ({dotted path: value}, the CLI's `--set`) applied and re-validated."""
    if overrides:
        return apply_overrides(load_app(app), overrides)
    if isinstance(app, AppConfig):
        return app
    if isinstance(app, dict):
        from pydantic import ValidationError

        from luodi.config import format_validation_error

        try:
            return AppConfig.model_validate(app)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e)) from e
    s = str(app)
    p = Path(s).expanduser()
    if p.suffix in (".yaml", ".yml") or p.exists():
        return load_app_config(p)
    try:
        run = registry.get_run(s)
        return load_app_config(run.path / "config.yaml")
    except NotFound:
        pass
    demo = DEMO_DIR / f"{s}.yaml"
    if demo.exists():
        return load_app_config(demo)
    raise NotFound(
        f"app '{s}' not found: give an App YAML path or the name of a trained app "
        f"(trained: {', '.join(registry.apps_with_runs()) or 'none'})",
        param="app",
    )


def render_config(app: AppRef, overrides: dict[str, Any] | None = None) -> str:
    """The fully resolved app config (defaults filled in, `overrides` applied) as YAML."""
    return yaml.safe_dump(load_app(app, overrides).model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def config_schema() -> dict[str, Any]:
    """JSON Schema of the App file."""
    return AppConfig.model_json_schema()


def _metric_name(cfg: AppConfig, metrics: dict[str, Any]) -> str:
    if cfg.tune.metric:
        return cfg.tune.metric
    if cfg.evaluate.metrics:
        return cfg.evaluate.metrics[0]
    for m in ("roc_auc", "accuracy", "f1", "rmse", "loss"):
        if m in metrics:
            return m
    return next(k for k, v in metrics.items() if isinstance(v, int | float))


def _select_metrics(cfg: AppConfig, metrics: dict[str, Any]) -> dict[str, float]:
    """Every float metric the task computed; evaluate.metrics names the ones to show first."""
    flat = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    first = {m: flat[m] for m in cfg.evaluate.metrics if m in flat}
    return {**first, **flat}


def check_metrics(cfg: AppConfig, metrics: dict[str, float]) -> list[str]:
    """Names in evaluate.metrics the task did not compute (reported, never fatal after a long training)."""
    return [m for m in cfg.evaluate.metrics if m not in metrics]


# ---- train ----------------------------------------------------------------------------------------------


def train(
    app: AppRef,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[EpochCallback] | None = None,
    log: Callable[[str], None] | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunInfo:
    """Train an app into a new run (or continue the newest unfinished one with resume=True).

    Writes runs/<app>/<version>/: config.yaml, weights, preprocessing metadata, metrics.json, report.html,
    manifest.json (last). Ctrl-C marks the run interrupted; `resume=True` continues from its checkpoint.
    `overrides` ({dotted path: value}) change the config for this run; its config.yaml records them.
    """
    say = log or (lambda m: None)
    cfg = load_app(app, overrides)
    task = task_for(cfg)
    if cfg.train.refit and (why := task.refit_blocker()):
        raise ConfigError(f"'train.refit': {why}; remove train.refit or change the model")
    cfg_yaml = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    run = registry.resumable_run(cfg.name) if resume else None
    if run is not None:
        old = run.path / "config.yaml"
        if old.exists() and old.read_text() != cfg_yaml:
            raise ConfigError(
                f"the app config changed since run {run.version} was interrupted (compare with its "
                f"{old}; resume with the same file and --set values) or train without --resume to start a new run"
            )
        registry.set_status(cfg.name, run.version, "running")
        say(f"resuming {cfg.name} {run.version} from {run.path}")
    else:
        if resume:
            say(f"no unfinished run of '{cfg.name}' to resume: starting a new run")
        run = registry.create_run(
            cfg.name, cfg.task, cfg.train.output_dir and str(Path(cfg.train.output_dir))
        )
        say(f"training {cfg.name} {run.version} into {run.path}")
    atomic.write_text(run.path / "config.yaml", cfg_yaml)
    if callbacks and hasattr(task, "callbacks"):
        task.callbacks = list(callbacks)
    elapsed_file = run.path / "elapsed.json"  # training time of interrupted attempts, so resumes add up
    before = json.loads(elapsed_file.read_text())["train_seconds"] if elapsed_file.exists() else 0.0
    t0 = time.perf_counter()
    try:
        data = task.read(None)
        tr, va = task.split(data)
        task.fit(tr, va, run.path, progress=progress)
        task.save(run.path)
        ev = task.evaluate(va)
        metrics = _select_metrics(cfg, ev)
        for m in check_metrics(cfg, metrics):
            say(f"note: evaluate.metrics '{m}' is not computed by task {cfg.task}; see metrics.json")
        info = {"app": cfg.name, "version": run.version, "task": cfg.task, "train_rows": len(tr), "valid_rows": len(va)}
        if cfg.train.refit:
            say(f"validated; refitting on all {len(data)} rows (train + validation) for the served model")
            final = task_for(cfg)  # same settings; its checkpoints apart from the first fit's
            final.fit(data, va, run.path / registry.CHECKPOINT_DIR / "refit", progress=progress)
            final.save(run.path)
            info["refit_rows"] = len(data)
        train_s = before + time.perf_counter() - t0
        info["train_seconds"] = round(train_s, 2)
        atomic.write_json(run.path / "metrics.json", {"valid": metrics, **info})
        _add_importance(ev, task, va)
        _write_report(
            run.path / "report.html",
            f"{cfg.name} {run.version} — validation",
            ev,
            getattr(task, "history", []),
            info,
        )
        registry.delete_checkpoint(run.path)
        elapsed_file.unlink(missing_ok=True)
        registry.write_manifest(run.path, {"app": cfg.name, "version": run.version, "task": cfg.task})
    except KeyboardInterrupt:
        atomic.write_json(elapsed_file, {"train_seconds": before + time.perf_counter() - t0})
        registry.set_status(cfg.name, run.version, "interrupted")
        say(f"interrupted: resume with `luodi train APP.yaml --resume` (run {run.version})")
        raise
    except BaseException:
        registry.set_status(cfg.name, run.version, "failed")
        raise
    return registry.set_status(cfg.name, run.version, "done", {**metrics, "train_seconds": round(train_s, 2)})


def _add_importance(ev: dict[str, Any], task: Any, data: Any) -> None:
    """Put the task's feature importance on `data` (if it has one) into the report material."""
    rows = task.importance(data) if hasattr(task, "importance") else None
    if rows:
        ev.setdefault("report", {})["importance"] = rows


def _write_report(path: Path, title: str, ev: dict[str, Any], history: list, info: dict[str, Any]) -> None:
    from luodi.evaluate.report import render_report

    atomic.write_text(path, render_report(title, ev, ev.get("report"), history, info))


# ---- loading and predicting -----------------------------------------------------------------------------


@dataclass
class Predictor:
    """A trained app loaded for inference (its files verified against the manifest)."""

    config: AppConfig
    run: RunInfo
    task: Any
    explain: bool = False  # add each feature's effect (table apps)

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.task.explain(records) if self.explain else self.task.predict(records)


def _app_name(app: AppRef) -> str:
    """The app's name from a name, an App YAML file or a config."""
    if not isinstance(app, str) or app.endswith((".yaml", ".yml")) or Path(app).is_file():
        return load_app(app).name
    return app


def load_predictor(app: AppRef, version: str | None = None) -> Predictor:
    """The run an app serves (pinned, else its latest finished run) or a given version, cached per process."""
    run = registry.get_run(_app_name(app), version)
    key = (run.app, run.version)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    registry.verify_manifest(run.path)
    cfg = load_app_config(run.path / "config.yaml")
    task = task_for(cfg)
    task.load(run.path)
    pred = Predictor(cfg, run, task)
    with _cache_lock:
        _cache[key] = pred
    return pred


def predict(
    app: AppRef,
    inputs: list[dict[str, Any]] | dict[str, Any] | str | Path,
    version: str | None = None,
    explain: bool = False,
) -> list[dict[str, Any]]:
    """Predict for records (a dict, a list of dicts) or an input file (csv/json/jsonl/parquet/image/wav);
    `explain`: each feature's effect on the prediction too (table apps)."""
    pred = load_predictor(_app_name(app), version)
    if explain:
        pred = Predictor(pred.config, pred.run, pred.task, explain=True)
    if isinstance(inputs, str | Path):
        if not Path(inputs).exists():
            raise BadRequest(f"input file '{inputs}' not found", param="input")
        records, sources = pred.task.read_inputs(str(inputs))
        if sources is not None:  # a folder: say which file each prediction is for
            return _predict_by_file(pred, records, sources)
    elif isinstance(inputs, dict):
        records = [inputs]
    else:
        records = list(inputs)
    return pred.predict(records)


def _predict_by_file(pred: Predictor, records: list[dict[str, Any]], sources: list[str]) -> list[dict[str, Any]]:
    """Predictions tagged with their file under "input": one predict call per file of rows (an error names the
    file), one call for all the files of an image / speech folder (their read errors name the file)."""
    if getattr(pred.task, "inputs_are_files", False):
        return [{"input": f, **o} for f, o in zip(sources, pred.predict(records), strict=True)]
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(records):
        j = i
        while j < len(records) and sources[j] == sources[i]:
            j += 1
        try:
            outs = pred.predict(records[i:j])
        except LuodiError as e:
            e.message = f"{Path(sources[i]).name}: {e.message}"
            e.args = (e.message,)
            raise
        out += [{"input": sources[i], **o} for o in outs]
        i = j
    return out


# ---- evaluate, tune, cv ---------------------------------------------------------------------------------


def evaluate(
    app: AppRef, data: str | Path | None = None, version: str | None = None, report: bool = True
) -> dict[str, Any]:
    """Metrics of the trained app on a labelled file in the dataset's format (default: validation split).

    Writes eval-<file>.json and eval-<file>.html next to the run (outside the manifest's files).
    """
    cfg = load_app(app)
    pred = load_predictor(cfg.name, version)
    task = pred.task
    note = None
    if data is None:
        fresh = task_for(pred.config)
        _, va = fresh.split(fresh.read(None))
        ds, tag = va, "valid"
        if pred.config.train.refit:
            note = (
                "this run was refit on train + validation rows: its validation score is not held-out "
                "(metrics.json has the score before the refit); pass --data FILE for an honest one"
            )
    else:
        if not Path(data).exists():
            raise BadRequest(f"evaluation file '{data}' not found", param="data")
        ds, tag = task.read(str(data)), Path(data).name
    ev = task.evaluate(ds)
    metrics = _select_metrics(pred.config, ev)
    out = {
        "app": cfg.name,
        "version": pred.run.version,
        "data": str(data or "validation split"),
        "metrics": metrics,
        **({"note": note} if note else {}),
    }
    if report:
        edir = pred.run.path / "evaluations"
        atomic.write_json(edir / f"{tag}.json", out)
        _add_importance(ev, task, ds)
        _write_report(
            edir / f"{tag}.html", f"{cfg.name} {pred.run.version} — {tag}", ev, [], {"data": out["data"]}
        )
        out["report"] = str(edir / f"{tag}.html")
    return out


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
    """Search tune.space; each trial fits on the train split (or k folds) and scores the validation metric.

    executor "local" runs Optuna in this process, storing each finished trial in runs/<app>/tune.db, so
    `resume=True` continues an interrupted search of the same config; "ray" runs the trials on Ray Tune
    (`cpus`: local Ray CPUs), its experiments under runs/<app>/ray/ (`resume=True`: Tuner.restore).
    `overrides` ({dotted path: value}) change the base config first, e.g. {"tune.trials": 5}.
    """
    from luodi.evaluate.metrics import is_lower_better
    from luodi.apps.cv import cross_validate
    from luodi.apps.hpo import parse_space, run_optuna, run_ray

    cfg = load_app(app, overrides)
    tc = cfg.tune
    space = parse_space(tc.space)
    sampler = sampler or tc.sampler
    trials = trials or tc.trials
    folds = folds or tc.folds
    if "direction" not in tc.model_fields_set and tc.metric and is_lower_better(tc.metric):
        tc = tc.model_copy(update={"direction": "minimize"})
    base_task = task_for(cfg)
    data = base_task.read(None)
    tr, va = base_task.split(data)
    metric_box: dict[str, str] = {}

    def objective(params: dict[str, Any]) -> float:
        c = apply_overrides(cfg, params, "tune.space")
        if folds > 1:
            res = cross_validate(c, folds, task_for, progress=False, data=tr)
            m = res["mean"]
        else:
            t = task_for(c)
            with tempfile.TemporaryDirectory(prefix="luodi-tune-") as d:
                t.fit(tr, va, Path(d), progress=False)
            m = {k: v for k, v in t.evaluate(va).items() if isinstance(v, int | float)}
        name = metric_box.setdefault("metric", _metric_name(c, m))
        if name not in m:
            raise ConfigError(f"'tune.metric' '{name}' is not computed; available: {', '.join(m)}")
        return float(m[name])

    if executor == "ray":
        # trials run in Ray workers: the metric's name is settled here, as the workers cannot report it back
        if not (tc.metric or cfg.evaluate.metrics):
            raise ConfigError("--executor ray needs the metric to optimize: set tune.metric or evaluate.metrics")
        metric_box["metric"] = _metric_name(cfg, {})
        ray_dir = registry.runs_root(cfg.train.output_dir) / cfg.name / "ray"
        # Tune cannot add trials to a restored experiment: --trials is part of what must match
        fingerprint = config_fingerprint(cfg, ("tune.trials",), sampler=sampler, folds=folds, trials=trials)
        res = run_ray(
            space, tc, objective, trials, sampler, cfg.train.seed, storage_dir=ray_dir, cpus=cpus,
            progress=progress, fingerprint=fingerprint, resume=resume,
        )
    elif executor == "local":
        out_dir = registry.runs_root(cfg.train.output_dir) / cfg.name
        out_dir.mkdir(parents=True, exist_ok=True)
        # tune.trials is left out: a resumed search may be extended with more trials
        fingerprint = config_fingerprint(cfg, ("tune.trials",), sampler=sampler, folds=folds)
        res = run_optuna(
            space, tc, objective, trials, sampler, cfg.train.seed, progress,
            storage_path=out_dir / "tune.db", fingerprint=fingerprint, resume=resume,
        )
    else:
        raise BadRequest(f"unknown executor '{executor}'; use local or ray", param="executor")
    res.update(
        app=cfg.name, sampler=sampler, metric=metric_box.get("metric"), direction=tc.direction, folds=folds
    )
    out_dir = registry.runs_root(cfg.train.output_dir) / cfg.name
    atomic.write_json(out_dir / f"tune-{time.strftime('%Y%m%d-%H%M%S')}.json", res)
    if train_best:
        best_cfg = apply_overrides(cfg, res["best_params"], "tune.space")
        res["run"] = train(best_cfg, progress=progress).as_dict()
    return res


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
    from luodi.apps.cv import cross_validate

    cfg = load_app(app, overrides)
    task = task_for(cfg)
    data = task.read(None)
    if train_only:
        data, _ = task.split(data)
    state = registry.runs_root(cfg.train.output_dir) / cfg.name / "cv.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = config_fingerprint(cfg, folds=folds, train_only=train_only, rows=len(data))
    res = cross_validate(
        cfg, folds, task_for, progress=progress, data=data, state=state, fingerprint=fingerprint, resume=resume
    )
    res.update(app=cfg.name, scope="training part" if train_only else "whole dataset")
    return res


def list_runs(app: str | None = None) -> list[dict[str, Any]]:
    """Runs (newest first) with status, metrics and `served` (the run predictions use) / `pinned`."""
    runs = [r.as_dict() for r in registry.list_runs(_app_name(app) if app else None)]
    for name in {r["app"] for r in runs}:
        pinned = registry.pinned_version(name)
        served = pinned or next((r["version"] for r in runs if r["app"] == name and r["status"] == "done"), None)
        for r in runs:
            if r["app"] == name:
                r["served"], r["pinned"] = r["version"] == served, r["version"] == pinned
    return runs


def promote(app: AppRef, version: str | None) -> dict[str, Any]:
    """Serve `version` of an app from now on (every server sharing the store), or, with None, its latest
    finished run again. The run must be finished and match its manifest. Returns the run now served."""
    name = _app_name(app)
    registry.pin_version(name, version)
    served = registry.get_run(name)  # NotFound when the app has no finished run to serve
    return next(r for r in list_runs(name) if r["version"] == served.version)


def trained_apps() -> list[Predictor]:
    """Every app with a finished run, loaded (apps whose files fail verification are skipped)."""
    out = []
    for name in registry.apps_with_runs():
        try:
            out.append(load_predictor(name))
        except Exception:  # noqa: BLE001 - a broken run must not take the server down
            continue
    return out


# ---- demo apps ------------------------------------------------------------------------------------------


def demo_app_files() -> list[Path]:
    return sorted(DEMO_DIR.glob("*.yaml"))


def ensure_demo_apps(
    progress: bool = False, log: Callable[[str], None] | None = None, names: list[str] | None = None
) -> list[dict[str, Any]]:
    """Train the embedded demo apps (breast-cancer diagnosis, 8x8 digits) once; later calls are instant.

    A demo whose task is not available in this installation is skipped with a note.
    """
    say = log or (lambda m: None)
    out = []
    for f in demo_app_files():
        cfg = load_app_config(f)
        if names is not None and cfg.name not in names:
            continue
        if cfg.task not in TASKS:  # e.g. the customer-service assistant: prepared by luodi.agent, not trained
            continue
        try:
            run = registry.get_run(cfg.name)
            out.append({"app": cfg.name, "status": "ready", "version": run.version, "metrics": run.metrics})
            continue
        except NotFound:
            pass
        try:
            task_for(cfg)
        except (ImportError, AttributeError) as e:
            say(f"demo app {cfg.name}: task {cfg.task} not available ({e}); skipped")
            out.append({"app": cfg.name, "status": "skipped", "reason": str(e)})
            continue
        say(f"training demo app {cfg.name} ...")
        run = train(f, progress=progress, log=log)
        out.append({"app": cfg.name, "status": "trained", "version": run.version, "metrics": run.metrics})
    return out


def dumps(obj: Any) -> str:
    return atomic.to_json(obj)
