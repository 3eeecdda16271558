"""HTTP face of luodi.monitor: GET /v1/apps/{name}/monitor (drift, counts, per-version latency and live quality;
the same report as `luodi monitor APP.yaml`) and POST /v1/apps/{name}/feedback (ground truth for logged
predictions, by the ids the predict response returned in X-Luodi-Prediction-Id)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from luodi import api
from luodi.monitor import predlog
from luodi.monitor.report import MAX_HOURS, MAX_ROWS, monitor
from luodi.options.strict import Strict

router = APIRouter()


class FeedbackItem(Strict):
    prediction_id: str = Field(
        pattern=r"^[0-9a-f]{32}$", description="an id from the predict response's X-Luodi-Prediction-Id header"
    )
    truth: str | float = Field(description="what the right answer was: a label, or a number for regression apps")


class FeedbackRequest(Strict):
    items: list[FeedbackItem] = Field(min_length=1, max_length=1000, description="1 to 1000 predictions' truths")


@router.get("/{name}/monitor", summary="Drift of the inputs, predictions, latency and live quality per version")
async def app_monitor(
    name: str,
    request: Request,
    hours: float = Query(24.0, gt=0, le=MAX_HOURS, description="the window: logged predictions of the last hours"),
    limit: int = Query(10_000, ge=1, le=MAX_ROWS, description="at most this many logged predictions (newest)"),
) -> dict[str, Any]:
    report = await run_in_threadpool(monitor, name, hours, limit)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.set_drift(name, {f["feature"]: f["score"] for f in report["drift"]["features"]})
    return report


def _labels(name: str) -> list[str] | None:
    """The classes a classification app predicts (None: a regression app or one without a fixed set)."""
    task = api.load_predictor(name).task
    if getattr(task, "objective", None) == "regression":
        return None
    classes = getattr(task, "classes", None)
    return [str(c) for c in classes] if classes else None


@router.post("/{name}/feedback", summary="Ground truth for logged predictions (live quality in the monitor)")
async def app_feedback(name: str, body: FeedbackRequest) -> dict[str, Any]:
    labels = await run_in_threadpool(_labels, name)  # 404 for an unknown app
    items = [(i.prediction_id, i.truth) for i in body.items]
    return await run_in_threadpool(predlog.record_feedback, name, items, labels)
