"""An app's runs as the CLI and HTTP show them (which one is served, which pinned), and promoting one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from luodi import crypto
from luodi.apps import registry
from luodi.apps.configs import AppRef, app_name


def list_runs(app: str | None = None) -> list[dict[str, Any]]:
    """Runs (newest first) with status, metrics and `served` (the run predictions use) / `pinned`."""
    runs = [{**r.as_dict(), "audited": (r.path / registry.AUDIT_PAGE).exists(), "optimized": _optimized(r.path),
             "held": registry.hold_reason(r) if r.status == "done" else None}
            for r in registry.list_runs(app_name(app) if app else None)]
    for name in {r["app"] for r in runs}:
        pinned = registry.pinned_version(name)
        served = pinned or next((r["version"] for r in runs
                                 if r["app"] == name and r["status"] == "done" and not r["held"]), None)
        for r in runs:
            if r["app"] == name:
                r["served"], r["pinned"] = r["version"] == served, r["version"] == pinned
    return runs


def _optimized(run_dir: Path) -> dict[str, Any] | None:
    """How an optimized run (`luodi optimize`) was made and what it measured against its base; None otherwise."""
    path = run_dir / registry.OPTIMIZED
    if not path.exists():
        return None
    done = crypto.read_json(path)
    table = done.get("table", {})
    row = table.get("rows", {}).get("optimized", {})
    return {"from": done.get("base_version"), "methods": done.get("methods", []), "size_mb": row.get("size_mb"),
            "p50_ms": row.get("p50_ms"), "speedup_batch1": table.get("ratios", {}).get("speedup_batch1"),
            "agreement": row.get("agreement")}


def promote(app: AppRef, version: str | None, force: bool = False) -> dict[str, Any]:
    """Serve `version` of an app from now on (every server sharing the store), or, with None, its latest
    finished run again. The run must be finished and match its manifest; one that missed its evaluate.goal needs
    `force`. Returns the run now served."""
    name = app_name(app)
    registry.pin_version(name, version, force)
    served = registry.get_run(name)  # NotFound when the app has no finished run to serve
    return next(r for r in list_runs(name) if r["version"] == served.version)
