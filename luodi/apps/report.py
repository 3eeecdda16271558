"""What a run or an evaluation reports: the metrics to show (evaluate.metrics first) and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from luodi import atomic
from luodi.config import AppConfig


def select_metrics(cfg: AppConfig, metrics: dict[str, Any]) -> dict[str, float]:
    """Every number the task computed; evaluate.metrics names the ones to show first."""
    flat = numbers(metrics)
    first = {m: flat[m] for m in cfg.evaluate.metrics if m in flat}
    return {**first, **flat}


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics (no report material, no flags) as floats."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def missing_metrics(cfg: AppConfig, metrics: dict[str, float]) -> list[str]:
    """Names in evaluate.metrics the task did not compute (reported, never fatal after a long training)."""
    return [m for m in cfg.evaluate.metrics if m not in metrics]


def add_importance(ev: dict[str, Any], task: Any, data: Any) -> None:
    """Put the task's feature importance on `data` (if it has one) into the report material."""
    rows = task.importance(data) if hasattr(task, "importance") else None
    if rows:
        ev.setdefault("report", {})["importance"] = rows


def write_report(
    path: Path, title: str, ev: dict[str, Any], history: list, info: dict[str, Any], sections: list[str] | None = None
) -> None:
    from luodi.evaluate.report import render_report

    atomic.write_text(path, render_report(title, ev, ev.get("report"), history, info, sections))
