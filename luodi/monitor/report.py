"""`monitor(app)`: the one implementation behind GET /v1/apps/{name}/monitor, `luodi monitor APP.yaml`, the
console's monitor chart and the luodi_app_drift gauge: per-feature drift of the logged inputs against the served
run's training reference, thresholds, counts, and per version its latency and live quality (from feedback).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select

from luodi.apps.configs import AppRef, app_name
from luodi.apps.predict import Predictor, load_predictor
from luodi.errors import BadRequest
from luodi.monitor import drift
from luodi.monitor.predlog import log_config, rows
from luodi.options.monitor import DriftConfig
from luodi.store.db import session_scope
from luodi.store.tables import PredictionLog
from luodi.tasks import task_for

log = logging.getLogger("luodi.monitor")
MAX_HOURS = 24 * 3650
MAX_ROWS = 100_000
_ref_lock = threading.Lock()


def check_window(hours: float, limit: int) -> None:
    """The window a monitor reads: errors name the parameter (the CLI's; the HTTP route checks the same bounds)."""
    if not (0 < hours <= MAX_HOURS):
        raise BadRequest(f"hours must be above 0 and at most {MAX_HOURS} (10 years); got {hours}", param="hours")
    if not (1 <= limit <= MAX_ROWS):
        raise BadRequest(f"limit must be 1 to {MAX_ROWS} logged predictions; got {limit}", param="limit")


def _embedder() -> Any:
    from luodi.embeddings import get_encoder

    return get_encoder().encode


def reference(pred: Predictor) -> dict[str, Any]:
    """The served run's drift reference: drift_reference.json in its folder, made from its training split the
    first time it is asked for (the app's data must still be readable then)."""
    path = pred.run.path / drift.REFERENCE
    with _ref_lock:
        if path.exists():
            return drift.load_reference(path)
        cfg = pred.config
        task = task_for(cfg)
        data = task.read(None)
        train, _ = task.split(data)
        fields = pred.task.input_model().model_fields
        names = [f.alias or n for n, f in fields.items()]
        columns = {c: train[c].tolist() for c in names if c in getattr(train, "columns", [])}
        bins = (cfg.serve.drift or DriftConfig()).bins
        try:
            ref = drift.build_reference(columns, bins, _embedder() if _has_text(columns) else None)
        except Exception as e:  # noqa: BLE001 - no encoder here: numbers and categories still get a reference
            log.warning("drift reference of %s %s without text features: %s", pred.run.app, pred.run.version, e)
            ref = drift.build_reference(columns, bins, None)
        ref["version"] = pred.run.version
        drift.save_reference(path, ref)
        return ref


def _has_text(columns: dict[str, list[Any]]) -> bool:
    return any(drift._is_text([str(v) for v in vals if isinstance(v, str)]) for vals in columns.values())


def _quality(logged: list[PredictionLog]) -> dict[str, Any] | None:
    """Live quality from the predictions that got feedback: accuracy (a label) or mean absolute error (a value)."""
    rated = [r for r in logged if r.truth is not None]
    if not rated:
        return None
    if all("label" in r.output for r in rated):
        hits = [str(r.output["label"]) == str(r.truth) for r in rated]
        return {"metric": "accuracy", "value": round(float(np.mean(hits)), 4), "rows": len(rated)}
    pairs = []
    for r in rated:
        try:
            pairs.append(abs(float(r.output["value"]) - float(r.truth)))
        except (KeyError, TypeError, ValueError):
            continue
    if not pairs:
        return None
    return {"metric": "mae", "value": round(float(np.mean(pairs)), 4), "rows": len(pairs)}


def _versions(logged: list[PredictionLog]) -> list[dict[str, Any]]:
    out = []
    for version in sorted({r.version for r in logged}, key=lambda v: (len(v), v)):
        mine = [r for r in logged if r.version == version]
        lat = np.asarray([r.latency_ms for r in mine])
        out.append({
            "version": version,
            "predictions": len(mine),
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 3),
                           "p95": round(float(np.percentile(lat, 95)), 3),
                           "mean": round(float(lat.mean()), 3)},
            "feedback": sum(r.truth is not None for r in mine),
            "quality": _quality(mine),
        })
    return out


def monitor(app: AppRef, hours: float = 24.0, limit: int = 10_000) -> dict[str, Any]:
    """What an app's logged predictions of the last `hours` (at most `limit`, newest first) say: per-feature drift
    against the served run's training reference, and per version the predictions, latency and live quality."""
    check_window(hours, limit)
    name = app_name(app)
    pred = load_predictor(name)
    cfg = pred.config
    thresholds = cfg.serve.drift or DriftConfig()
    until = datetime.now(UTC)
    since = until - timedelta(hours=hours)
    logged = rows(name, since, limit)
    features, note = [], None
    try:
        ref = reference(pred)
    except Exception as e:  # noqa: BLE001 - the data moved or cannot be read: counts and quality still shown
        ref, note = {"features": {}}, f"no drift reference: {e}"
    embed = None
    for feat, profile in ref["features"].items():
        if profile["kind"] == "text" and "centroid" in profile and logged and embed is None:
            embed = _embedder()
        values = [r.inputs.get(feat) for r in logged]
        score, n = drift.score_feature(profile, values, embed)
        limit_ = thresholds.text_threshold if profile["kind"] == "text" else thresholds.psi_threshold
        features.append({
            "feature": feat,
            "kind": profile["kind"],
            "score": None if score is None else round(score, 4),
            "threshold": limit_,
            "rows": n,
            "drifted": score is not None and n >= thresholds.min_rows and score > limit_,
        })
    features.sort(key=lambda f: -(f["score"] or 0))
    lc = log_config(cfg)
    return {
        "app": name,
        "served_version": pred.run.version,
        "window": {"hours": hours, "since": since.isoformat(), "until": until.isoformat(), "limit": limit,
                   "rows": len(logged)},
        "drift": {
            "reference_version": ref.get("version"),
            "min_rows": thresholds.min_rows,
            "features": features,
            "drifted": [f["feature"] for f in features if f["drifted"]],
            **({"note": note} if note else {}),
        },
        "versions": _versions(logged),
        "quality": _quality(logged),
        "traffic": cfg.serve.traffic,
        "log": lc.model_dump(),
    }


_gauge_cache: dict[str, Any] = {"at": -1e9, "scores": {}}
GAUGE_TTL_S = 60.0


def drift_scores(hours: float = 24.0) -> dict[tuple[str, str], float]:
    """(app, feature) -> drift score of every app with logged predictions in the last `hours`, recomputed at most
    once a minute (the luodi_app_drift gauge, read at each scrape)."""
    if time.monotonic() - _gauge_cache["at"] < GAUGE_TTL_S:
        return _gauge_cache["scores"]
    since = datetime.now(UTC) - timedelta(hours=hours)
    with session_scope() as s:
        apps = list(s.scalars(select(PredictionLog.app).where(PredictionLog.at >= since).distinct()))
    scores: dict[tuple[str, str], float] = {}
    for name in apps:
        try:
            report = monitor(name, hours)
        except Exception:  # noqa: BLE001 - one app's failure must not blank the others
            log.warning("drift of app %s not computed for the gauge", name, exc_info=True)
            continue
        scores.update({(name, f["feature"]): f["score"] for f in report["drift"]["features"] if f["score"] is not None})
    _gauge_cache.update(at=time.monotonic(), scores=scores)
    return scores
