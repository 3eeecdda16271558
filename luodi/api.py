"""The public Python API of luodi apps (`from luodi import api`): the verbs live in luodi.apps, one module
each; the CLI (luodi.cli.apps), the HTTP routes (luodi.serve.apps_routes), tests and docs call them from here.
"""

from __future__ import annotations

from luodi.apps.configs import AppRef, config_schema, load_app, render_config
from luodi.apps.cv import cv
from luodi.apps.demo import demo_app_files, ensure_demo_apps
from luodi.apps.evaluate import evaluate
from luodi.apps.predict import Predictor, forget_loaded, load_predictor, predict, predict_files, trained_apps
from luodi.apps.registry import RunInfo
from luodi.apps.runs import list_runs, promote
from luodi.apps.train import train
from luodi.apps.tune import tune
from luodi.atomic import to_json as dumps

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
