"""Score a trained app on labelled data: its validation split, or a file in the dataset's own format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from luodi import atomic
from luodi.apps import registry
from luodi.apps.configs import AppRef, load_app
from luodi.apps.predict import load_predictor
from luodi.apps.report import add_importance, select_metrics, write_report
from luodi.errors import BadRequest, NotFound
from luodi.tasks import task_for

REFIT_NOTE = (
    "this run was refit on train + validation rows: its validation score is not held-out "
    "(metrics.json has the score before the refit); pass --data FILE for an honest one"
)


def evaluate(
    app: AppRef, data: str | Path | None = None, version: str | None = None, report: bool = True
) -> dict[str, Any]:
    """Metrics of the trained app on a labelled file in the dataset's format (default: validation split).

    Writes evaluations/<file>.json and .html in the run's folder (outside the manifest's files).
    """
    cfg = load_app(app)
    held = None
    if version is None:
        version, held = _evaluated_version(cfg.name)
    pred = load_predictor(cfg.name, version)
    task = pred.task
    if data is None:
        fresh = task_for(pred.config)
        _, ds = fresh.split(fresh.read(None))
        tag, note = "valid", REFIT_NOTE if pred.config.train.refit else None
    else:
        if not Path(data).exists():
            raise BadRequest(f"evaluation file '{data}' not found", param="data")
        ds, tag, note = task.read(str(data)), Path(data).name, None
    ev = task.evaluate(ds)
    out = {
        "app": cfg.name,
        "version": pred.run.version,
        "data": str(data or "validation split"),
        "metrics": select_metrics(pred.config, ev),
        **({"note": note} if note else {}),
        **({"held": f"{pred.run.version} does not serve by itself: {held}"} if held else {}),
    }
    if report:
        edir = pred.run.path / "evaluations"
        atomic.write_json(edir / f"{tag}.json", out)
        add_importance(ev, task, ds)
        title = f"{cfg.name} {pred.run.version} — {tag}"
        write_report(edir / f"{tag}.html", title, ev, [], {"data": out["data"]})
        out["report"] = str(edir / f"{tag}.html")
    return out


def _evaluated_version(app: str) -> tuple[str, str | None]:
    """The run the app serves, else the newest finished one with why it is held back: when every run is (optimized,
    or it missed its evaluate.goal), evaluating it is how one decides whether to promote it."""
    try:
        return registry.get_run(app).version, None
    except NotFound:
        done = [r for r in registry.list_runs(app) if r.status == "done"]
        if not done:
            raise
        return done[0].version, registry.hold_reason(done[0])
