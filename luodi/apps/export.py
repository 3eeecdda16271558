"""`luodi export APP.yaml --format onnx --out DIR`: a trained (or optimized) run as a standalone bundle.

The task writes the model file(s), its preprocessing as data and a small predict.py that needs only onnxruntime,
numpy and tokenizers (`task.export_bundle`); this verb adds the README of inputs and outputs and writes the
folder atomically (a failed export leaves no half-written bundle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from luodi import atomic
from luodi.apps import registry
from luodi.apps.configs import AppRef, app_name
from luodi.config import load_app_config
from luodi.errors import ConfigError
from luodi.tasks import task_for

FORMATS = ("onnx",)


def export(app: AppRef, out: str | Path, *, format: str = "onnx", version: str | None = None) -> dict[str, Any]:
    """Write the bundle of `app`'s served run (or `version`) into the folder `out`; returns what it holds."""
    if format not in FORMATS:
        raise ConfigError(f"--format '{format}' is not supported; use one of: {', '.join(FORMATS)}", param="format")
    run = registry.get_run(app_name(app), version)
    registry.verify_manifest(run.path)
    cfg = load_app_config(run.path / "config.yaml")
    task = task_for(cfg)
    if not hasattr(task, "export_bundle"):
        raise ConfigError(f"task {cfg.task} has no ONNX bundle export: bundles are built for text-classification, "
                          "token-classification, image-classification, speech-recognition, tabular, anomaly-detection "
                          "and recommendation apps", param="app")
    task.load(run.path)
    with atomic.atomic_dir(out) as tmp:
        spec = task.export_bundle(tmp)
        atomic.write_text(tmp / "README.md", _readme(cfg, run, spec))
    files = sorted(p.name for p in Path(out).iterdir())
    return {"app": cfg.name, "version": run.version, "out": str(Path(out).resolve()), "files": files, **spec}


def _readme(cfg: Any, run: registry.RunInfo, spec: dict[str, Any]) -> str:
    lines = [
        f"# {cfg.name} {run.version} ({cfg.task}), exported by luodi",
        "",
        cfg.description or "",
        "",
        f"Needs only `pip install {spec['requires']}`.",
        "",
        f"- Input: {spec['inputs']}",
        f"- Output: {spec['outputs']}",
        f"- Files: {spec['contents']}",
        "",
        "```",
        spec["example"],
        "```",
    ]
    return "\n".join(lines) + "\n"
