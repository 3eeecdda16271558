"""Predict with a trained app: its run loaded once per process (files verified against the manifest)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from luodi.apps import registry
from luodi.apps.configs import AppRef, app_name
from luodi.apps.registry import RunInfo
from luodi.config import AppConfig, load_app_config
from luodi.data.inmemory import InMemoryFile
from luodi.errors import BadRequest, LuodiError
from luodi.tasks import task_for

Records = list[dict[str, Any]]
InputGuard = Callable[[Records], tuple[Records, list[str]]]  # records -> (redacted copies, entity types removed)
# builds an app's InputGuard from its `guard.pii` settings; luodi.api passes luodi.privacy's (a layer above this one)
GuardFactory = Callable[[Any], InputGuard]


@dataclass
class Predictor:
    """A trained app loaded for inference (its files verified against the manifest)."""

    config: AppConfig
    run: RunInfo
    task: Any
    explain: bool = False  # add each feature's effect (table apps)
    guard: InputGuard | None = None  # the app's guard.pii, when it has one and the loader was given the factory

    def redact(self, records: Records) -> tuple[Records, list[str]]:
        """The records as the model may see them (guard.pii applied), and the entity types removed."""
        return self.guard(records) if self.guard is not None else (records, [])

    def predict(self, records: Records) -> Records:
        return self.predict_redacted(self.redact(records)[0])

    def predict_redacted(self, records: Records) -> Records:
        """Predictions for records that went through `redact` already (the HTTP routes report what it removed)."""
        return self.task.explain(records) if self.explain else self.task.predict(records)

    def explaining(self, explain: bool = True) -> Predictor:
        """The same loaded run, predicting with (or without) each feature's effect."""
        return self if explain == self.explain else replace(self, explain=explain)


_cache: dict[tuple[str, str], Predictor] = {}
_cache_lock = threading.Lock()


def load_predictor(app: AppRef, version: str | None = None, guard: GuardFactory | None = None) -> Predictor:
    """The run an app serves (pinned, else its latest finished run) or a given version, cached per process;
    with `guard`, the app's guard.pii redacts its inputs (luodi.api always passes it)."""
    pred = _load(app, version)
    pii = pred.config.guard.pii if pred.config.guard is not None else None
    return replace(pred, guard=guard(pii)) if guard is not None and pii is not None else pred


def _load(app: AppRef, version: str | None) -> Predictor:
    run = registry.get_run(app_name(app), version)
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


def forget_loaded() -> None:
    """Drop the loaded runs, so the next prediction loads (and verifies) each again."""
    with _cache_lock:
        _cache.clear()


def trained_apps() -> list[Predictor]:
    """Every app with a finished run, loaded (apps whose files fail verification are skipped)."""
    out = []
    for name in registry.apps_with_runs():
        try:
            out.append(load_predictor(name))
        except Exception:  # noqa: BLE001 - a broken run must not take the server down
            continue
    return out


def predict(
    app: AppRef,
    inputs: Records | dict[str, Any] | str | Path,
    version: str | None = None,
    explain: bool = False,
    guard: GuardFactory | None = None,
) -> Records:
    """Predict for records (a dict, a list of dicts) or an input file or folder (csv/json/jsonl/parquet/image/wav);
    `explain`: each feature's effect on the prediction too (table apps); `guard`: as load_predictor's."""
    pred = load_predictor(app_name(app), version, guard).explaining(explain)
    if isinstance(inputs, dict):
        return pred.predict([inputs])
    if not isinstance(inputs, str | Path):
        return pred.predict(list(inputs))
    if not Path(inputs).exists():
        raise BadRequest(f"input file '{inputs}' not found", param="input")
    records, sources = pred.task.read_inputs(str(inputs))
    if sources is None:
        return pred.predict(records)
    return predict_by_file(pred, records, sources)  # a folder: say which file each prediction is for


def predict_files(
    app: AppRef,
    files: list[tuple[str, bytes]],
    version: str | None = None,
    explain: bool = False,
    guard: GuardFactory | None = None,
    seen: Records | None = None,
) -> Records:
    """Predictions for uploaded files, (name, bytes) each, read in memory as `predict` reads the files of a
    folder: their rows (one predict call per file; an error names the file), or for image / speech apps each
    file as one input. Each output names its file under "input". `seen` (when given) receives, in the outputs'
    order, the inputs as the model saw them (rows after guard.pii; a file's name and size) for the prediction log."""
    pred = load_predictor(app_name(app), version, guard).explaining(explain)
    names = [name for name, _ in files]
    if getattr(pred.task, "inputs_are_files", False):  # the task decodes the bytes given as its input
        if seen is not None:
            seen += [{"file": name, "bytes": len(data)} for name, data in files]
        return predict_by_file(pred, [{"path": data} for _, data in files], names)
    records: Records = []
    sources: list[str] = []
    for name, data in files:
        with InMemoryFile.holding(name, data) as f:
            rows = pred.task.read_input(f)  # its errors name the file (str(f) is its name)
        if not rows:
            raise BadRequest(f"input file '{name}' holds nothing to predict (no rows or texts)", param="input")
        records += rows
        sources += [name] * len(rows)
    records = pred.redact(records)[0]  # guard.pii once, here: the rows predicted are the rows logged
    if seen is not None:
        seen += records
    return predict_by_file(replace(pred, guard=None), records, sources)


def predict_by_file(pred: Predictor, records: Records, sources: list[str]) -> Records:
    """Predictions tagged with their file under "input": one predict call per file of rows (an error names the
    file), one call for all the files of an image / speech folder (their read errors name the file)."""
    if getattr(pred.task, "inputs_are_files", False):
        return [{"input": f, **o} for f, o in zip(sources, pred.predict(records), strict=True)]
    out: Records = []
    i = 0
    while i < len(records):
        j = i
        while j < len(records) and sources[j] == sources[i]:
            j += 1
        out += [{"input": sources[i], **o} for o in _naming(Path(sources[i]).name, pred.predict, records[i:j])]
        i = j
    return out


def _naming(name: str, fn: Any, *args: Any) -> Any:
    """fn(*args), a luodi error raised by it prefixed with the file `name` it is about."""
    try:
        return fn(*args)
    except LuodiError as e:
        e.message = f"{name}: {e.message}"
        e.args = (e.message,)
        raise
