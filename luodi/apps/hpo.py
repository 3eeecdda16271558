"""Hyper-parameter search over dotted config paths with Optuna (grid / random / TPE) or Ray Tune.

Search space (tune.space): `train.lr: {low: 0.01, high: 0.3, log: true}`, `model.options.num_leaves:
{low: 8, high: 64, type: int}`, or a list of choices `model.type: [lightgbm, ensemble]`. Grid search
needs finite values: lists, or ranges with `step`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from luodi.config import TuneConfig
from luodi.errors import BadRequest, ConfigError

Objective = Callable[[dict[str, Any]], float]


def _spec(path: str, spec: Any) -> dict[str, Any]:
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"'tune.space.{path}': empty list of choices")
        return {"choices": spec}
    if isinstance(spec, dict) and "low" in spec and "high" in spec:
        bad = set(spec) - {"low", "high", "log", "step", "type"}
        if bad:
            raise ConfigError(
                f"'tune.space.{path}': unknown key(s) {sorted(bad)}; use low, high, log, step, type"
            )
        if spec["low"] > spec["high"]:
            raise ConfigError(f"'tune.space.{path}': low must not exceed high")
        typ = spec.get("type") or (
            "int"
            if all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("low", "high"))
            and isinstance(spec.get("step", 1), int)
            else "float"
        )
        if typ not in ("int", "float"):
            raise ConfigError(f"'tune.space.{path}.type' must be int or float (got {typ!r})")
        return {**spec, "type": typ}
    raise ConfigError(
        f"'tune.space.{path}': expected a list of choices or {{low, high[, log, step, type]}} (got {spec!r})"
    )


def parse_space(space: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if not space:
        raise ConfigError(
            "'tune.space' is empty: add dotted paths to search, e.g. `train.lr: {low: 0.01, high: 0.3}`"
        )
    return {p: _spec(p, s) for p, s in space.items()}


def grid_values(path: str, s: dict[str, Any]) -> list[Any]:
    if "choices" in s:
        return list(s["choices"])
    if "step" not in s:
        raise ConfigError(f"'tune.space.{path}': grid search needs a list of values or a range with `step`")
    vals = np.arange(s["low"], s["high"] + 1e-12, s["step"])
    return [int(v) for v in vals] if s["type"] == "int" else [float(v) for v in vals]


def suggest(trial, path: str, s: dict[str, Any]) -> Any:
    if "choices" in s:
        return trial.suggest_categorical(path, s["choices"])
    if s["type"] == "int":
        return trial.suggest_int(
            path, int(s["low"]), int(s["high"]), step=int(s.get("step", 1)), log=bool(s.get("log"))
        )
    return trial.suggest_float(
        path, float(s["low"]), float(s["high"]), step=s.get("step"), log=bool(s.get("log"))
    )


def run_optuna(
    space: dict[str, dict[str, Any]],
    tc: TuneConfig,
    objective: Objective,
    trials: int,
    sampler: str,
    seed: int = 0,
    progress: bool = True,
    *,
    storage_path: Path | None = None,
    fingerprint: str = "",
    resume: bool = False,
) -> dict[str, Any]:
    """Optuna search. With `storage_path` every finished trial is stored in that SQLite file as it completes, so
    an interrupted search (Ctrl-C, a kill) loses at most the running trial; `resume` continues the latest search
    whose `fingerprint` (config + sampler + folds) matches, up to `trials` finished trials in all."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sampler == "grid":
        grid = {p: grid_values(p, s) for p, s in space.items()}
        trials = min(trials, int(np.prod([len(v) for v in grid.values()])))
    elif sampler not in ("random", "tpe"):
        raise BadRequest(f"unknown sampler '{sampler}'; use grid, random or tpe", param="sampler")
    storage = None if storage_path is None else f"sqlite:///{Path(storage_path).resolve()}"
    if resume and storage is None:
        raise BadRequest("resume needs a stored search (storage_path)", param="resume")
    fresh = f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    name = _study_to_resume(storage, fingerprint) if resume else fresh
    study = optuna.create_study(direction=tc.direction, storage=storage, study_name=name, load_if_exists=resume)
    study.set_user_attr("fingerprint", fingerprint)
    offset = len(study.trials)  # a resumed random / TPE search must not replay the seed's first draws
    if sampler == "grid":  # skips the grid points already finished in this study
        study.sampler = optuna.samplers.GridSampler(grid, seed=seed)
    elif sampler == "random":
        study.sampler = optuna.samplers.RandomSampler(seed=seed + offset)
    else:
        study.sampler = optuna.samplers.TPESampler(seed=seed + offset, n_startup_trials=min(5, max(1, trials // 3)))

    def fn(trial) -> float:
        return objective({p: suggest(trial, p, s) for p, s in space.items()})

    finished = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    if trials > finished:
        study.optimize(fn, n_trials=trials - finished, show_progress_bar=progress)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {
        "best_params": study.best_params,
        "best_value": float(study.best_value),
        "trials": [{"number": t.number, "params": t.params, "value": float(t.value)} for t in done],
        **({"study": name, "resumed_after": finished} if resume else {}),
    }


def _study_to_resume(storage: str, fingerprint: str) -> str:
    """The latest stored search with this fingerprint; a 400 saying why when there is none."""
    import optuna

    studies = optuna.get_all_study_summaries(storage, include_best_trial=False)
    same = [s for s in studies if s.user_attrs.get("fingerprint") == fingerprint]
    if not same:
        why = (
            "the stored searches used another config, sampler or --folds"
            if studies
            else "no search of this app was stored yet"
        )
        raise BadRequest(f"nothing to resume: {why}; run `luodi tune` without --resume", param="resume")
    return max(same, key=lambda s: (s.datetime_start or 0, s.study_name)).study_name


def run_ray(
    space: dict[str, dict[str, Any]],
    tc: TuneConfig,
    objective: Objective,
    trials: int,
    sampler: str,
    seed: int = 0,
    *,
    storage_dir: Path | None = None,
    cpus: int | None = None,
    progress: bool = True,
    fingerprint: str = "",
    resume: bool = False,
) -> dict[str, Any]:
    """The same search on Ray Tune: each trial is a Ray task calling `objective` (one CPU per trial).

    Connects to a cluster when RAY_ADDRESS is set; otherwise starts a local Ray without the dashboard, limited
    to `cpus` CPUs (default: all), and stops it afterwards. Trials keep the caller's working directory, so
    relative paths in the app still resolve. Results go under `storage_dir` (default ~/ray_results), one
    experiment folder per search with its `fingerprint` beside it (<name>.luodi.json). Ctrl-C lets Tune save its
    state and raises KeyboardInterrupt; `resume` restores the latest experiment with the same fingerprint
    (Tuner.restore: finished trials are kept, unfinished and failed ones run again).
    """
    try:
        import ray
        from ray import tune
    except ImportError as e:
        raise BadRequest(
            "--executor ray needs Ray Tune: install it with `pip install 'luodi[ray]'`", param="executor"
        ) from e
    if cpus is not None and cpus < 1:
        raise BadRequest(f"cpus must be at least 1 (got {cpus})", param="cpus")
    if sampler not in ("grid", "random", "tpe"):
        raise BadRequest(f"unknown sampler '{sampler}'; use grid, random or tpe", param="sampler")
    rspace: dict[str, Any] = {}
    for p, s in space.items():
        if "choices" in s:
            rspace[p] = tune.grid_search(s["choices"]) if sampler == "grid" else tune.choice(s["choices"])
        elif sampler == "grid":
            rspace[p] = tune.grid_search(grid_values(p, s))
        elif s["type"] == "int":
            step = int(s.get("step") or 1)
            if s.get("log"):
                rspace[p] = tune.qlograndint(s["low"], s["high"], step)  # q* bounds are inclusive
            else:
                rspace[p] = tune.qrandint(s["low"], s["high"], step)
        elif s.get("step"):
            quantized = tune.qloguniform if s.get("log") else tune.quniform
            rspace[p] = quantized(s["low"], s["high"], float(s["step"]))
        else:
            rspace[p] = tune.loguniform(s["low"], s["high"]) if s.get("log") else tune.uniform(s["low"], s["high"])
    mode = "max" if tc.direction == "maximize" else "min"
    search_alg = None
    if sampler == "tpe":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(metric="score", mode=mode, seed=seed)

    def trainable(config: dict[str, Any]) -> dict[str, float]:
        return {"score": float(objective({p: config[p] for p in space}))}

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # read by Tune, passed on to its workers
    root = Path(storage_dir or "~/ray_results").expanduser().resolve()
    restore_from = _experiment_to_resume(root, fingerprint) if resume else None
    name = f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if not os.environ.get("RAY_ADDRESS"):
            kw["num_cpus"] = cpus
        ray.init(**kw)
        started = True
    try:
        if restore_from is not None:
            tuner = tune.Tuner.restore(str(restore_from), trainable, resume_unfinished=True, restart_errored=True)
            before = [r for r in tuner.get_results() if r.error is None and r.metrics and "score" in r.metrics]
        else:
            root.mkdir(parents=True, exist_ok=True)
            (root / f"{name}.luodi.json").write_text(json.dumps({"fingerprint": fingerprint}))
            tuner = tune.Tuner(
                trainable,
                param_space=rspace,
                tune_config=tune.TuneConfig(
                    metric="score", mode=mode, num_samples=1 if sampler == "grid" else trials, search_alg=search_alg
                ),
                run_config=tune.RunConfig(name=name, storage_path=str(root), verbose=1 if progress else 0),
            )
        results = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    rows = [
        {"number": i, "params": {p: r.config[p] for p in space}, "value": float(r.metrics["score"])}
        for i, r in enumerate(results)
        if r.error is None and r.metrics and "score" in r.metrics
    ]
    if any(r.error is None and not (r.metrics and "score" in r.metrics) for r in results):
        raise KeyboardInterrupt(  # Tune stopped on Ctrl-C with trials left: its state is saved
            f"{len(rows)} Ray Tune trials finished; the rest continue with --resume"
        )
    if not rows:
        first = next((r.error for r in results if r.error is not None), None)
        raise BadRequest(f"every Ray Tune trial failed; the first error: {first}", param="executor")
    best = results.get_best_result()
    return {
        "best_params": {p: best.config[p] for p in space},
        "best_value": float(best.metrics["score"]),
        "trials": rows,
        "failed_trials": sum(r.error is not None for r in results),
        **({"experiment": restore_from.name, "resumed_after": len(before)} if restore_from is not None else {}),
    }


def _experiment_to_resume(root: Path, fingerprint: str) -> Path:
    """The latest restorable Ray Tune experiment under `root` with this fingerprint; a 400 saying why if none."""
    from ray import tune

    marks = sorted(root.glob("*.luodi.json"), reverse=True) if root.is_dir() else []
    same = [m for m in marks if json.loads(m.read_text()).get("fingerprint") == fingerprint]
    for mark in same:
        exp = mark.with_name(mark.name.removesuffix(".luodi.json"))
        if tune.Tuner.can_restore(exp):
            return exp
    why = (
        "the stored Ray searches cannot be restored (no Tune state saved)"
        if same
        else "the stored Ray searches used another config, sampler, --folds or --trials"
        if marks
        else "no Ray search of this app was stored yet"
    )
    raise BadRequest(f"nothing to resume: {why}; run `luodi tune --executor ray` without --resume", param="resume")
