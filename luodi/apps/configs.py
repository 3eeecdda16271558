"""Which app a verb works on: an App YAML path, a dict, a trained app's name (its latest run) or a demo's name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from luodi.apps import registry
from luodi.config import AppConfig, apply_overrides, load_app_config
from luodi.errors import ConfigError, NotFound

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo"
AppRef = str | Path | AppConfig | dict


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
    except NotFound:  # no run serves by itself (every one held back): the newest finished one's config
        done = [r for r in registry.list_runs(s) if r.status == "done"]
        if done:
            return load_app_config(done[0].path / "config.yaml")
    demo = DEMO_DIR / f"{s}.yaml"
    if demo.exists():
        return load_app_config(demo)
    raise NotFound(
        f"app '{s}' not found: give an App YAML path or the name of a trained app "
        f"(trained: {', '.join(registry.apps_with_runs()) or 'none'})",
        param="app",
    )


def app_name(app: AppRef) -> str:
    """The app's name from a name, an App YAML file or a config (a name is not looked up)."""
    if not isinstance(app, str) or app.endswith((".yaml", ".yml")) or Path(app).is_file():
        return load_app(app).name
    return app


def config_yaml(cfg: AppConfig) -> str:
    """The config as a run's config.yaml holds it (defaults filled in)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def render_config(app: AppRef, overrides: dict[str, Any] | None = None) -> str:
    """The fully resolved app config (defaults filled in, `overrides` applied) as YAML."""
    return config_yaml(load_app(app, overrides))


def config_schema() -> dict[str, Any]:
    """JSON Schema of the App file."""
    return AppConfig.model_json_schema()
