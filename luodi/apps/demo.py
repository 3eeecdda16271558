"""The embedded demo apps (luodi/demo/*.yaml), trained once so that `luodi demo` serves them at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from luodi.apps import registry
from luodi.apps.configs import DEMO_DIR
from luodi.apps.train import train
from luodi.config import load_app_config
from luodi.errors import NotFound
from luodi.tasks import TASKS, task_for


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
