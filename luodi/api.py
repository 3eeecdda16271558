"""The public Python API of luodi apps (`from luodi import api`): the verbs live in luodi.apps, one module
each; the CLI (luodi.cli.apps), the HTTP routes (luodi.serve.apps_routes), tests and docs call them from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from luodi.apps import predict as _predict
from luodi.apps.configs import AppRef, config_schema, load_app, render_config
from luodi.apps.cv import cv
from luodi.apps.demo import demo_app_files, ensure_demo_apps
from luodi.apps.evaluate import evaluate
from luodi.apps.federated import federated
from luodi.apps.predict import Predictor, Records, forget_loaded, trained_apps
from luodi.apps.registry import RunInfo
from luodi.apps.runs import list_runs, promote
from luodi.apps.train import train
from luodi.apps.tune import tune
from luodi.atomic import to_json as dumps
from luodi.errors import ConfigError


def _pii_guard(removed: set[str] | None = None) -> Any:
    """The factory of an app's guard.pii input guard (luodi.privacy, imported only when an app has guard.pii:
    Presidio is an extra); the entity types it removes are added to `removed` when given."""

    def factory(cfg: Any) -> Any:
        try:
            from luodi.privacy.app_guard import input_guard
        except ImportError as e:
            raise ConfigError(
                f"guard.pii needs Presidio ({e.name} is not installed): pip install -e '.[privacy]'",
                param="guard.pii",
            ) from None
        guard = input_guard(cfg)
        if removed is None:
            return guard

        def collecting(records: Records) -> tuple[Records, list[str]]:
            out, types = guard(records)
            removed.update(types)
            return out, types

        return collecting

    return factory


def load_predictor(app: AppRef, version: str | None = None) -> Predictor:
    """The run an app serves (or `version`), loaded once per process, with its guard.pii when it has one."""
    return _predict.load_predictor(app, version, _pii_guard())


def predict(
    app: AppRef, inputs: Records | dict[str, Any] | str | Path, version: str | None = None, explain: bool = False
) -> Records:
    """luodi.apps.predict.predict, with the app's guard.pii applied to its inputs."""
    return _predict.predict(app, inputs, version, explain, _pii_guard())


def predict_files(
    app: AppRef,
    files: list[tuple[str, bytes]],
    version: str | None = None,
    explain: bool = False,
    removed: set[str] | None = None,
    seen: Records | None = None,
) -> Records:
    """luodi.apps.predict.predict_files, with the app's guard.pii applied to the texts read from the files (the
    entity types it removed are added to `removed`; `seen` receives the inputs as predicted, for the log)."""
    return _predict.predict_files(app, files, version, explain, _pii_guard(removed), seen)


__all__ = [
    "AppRef",
    "Predictor",
    "RunInfo",
    "config_schema",
    "cv",
    "demo_app_files",
    "dumps",
    "ensure_demo_apps",
    "evaluate",
    "federated",
    "forget_loaded",
    "list_runs",
    "load_app",
    "load_predictor",
    "predict",
    "predict_files",
    "promote",
    "render_config",
    "train",
    "trained_apps",
    "tune",
]
