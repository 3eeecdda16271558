"""Typed `serve.log`, `serve.drift` and `serve.traffic` of the App file: what a served app records about its
predictions, when its inputs count as drifted, and how its predictions are split between two versions.

They live under `serve:` because they are read from the config of the run an app serves (its config.yaml), like
serve.batch_size. Unset, each has the defaults below (`serve.log` unset logs every prediction for 30 days).
"""

from __future__ import annotations

import re

from pydantic import Field

from luodi.options.strict import Strict

VERSION = re.compile(r"^v\d+$")


class PredictionLogConfig(Strict):
    """The prediction log (table prediction_log): each logged prediction keeps its inputs, output, version and
    latency; its id comes back in the X-Luodi-Prediction-Id header, for feedback."""

    sample: float = Field(
        1.0, ge=0.0, le=1.0, description="share of predictions logged (0: none, 1: all); drawn at random per record"
    )
    retention_days: float = Field(
        30.0, gt=0, le=3650, description="logged predictions older than this many days are deleted"
    )
    max_rows: int = Field(
        100_000, ge=100, le=100_000_000, description="at most this many logged predictions kept per app (oldest go)"
    )


class DriftConfig(Strict):
    """When a feature counts as drifted against the training reference (drift_reference.json of the run)."""

    psi_threshold: float = Field(
        0.2, gt=0, description="numeric and categorical features: population stability index above this is drift"
    )
    text_threshold: float = Field(
        0.3,
        gt=0,
        description="text features: distance between the live and the training embedding centroids (less what "
        "chance gives), in units of the training texts' mean distance to their centroid, above this is drift",
    )
    bins: int = Field(10, ge=2, le=50, description="quantile bins per numeric feature in the reference")
    min_rows: int = Field(30, ge=1, description="fewer logged rows in the window: scores shown, never flagged")


def check_traffic(traffic: dict[str, int] | None) -> dict[str, int] | None:
    """serve.traffic: two or more versions (v1, v2, ...) with integer weights, at least one above zero."""
    if traffic is None:
        return None
    bad = [v for v in traffic if not VERSION.match(v)]
    if bad:
        raise ValueError(f"versions are named v1, v2, ... (see `luodi runs APP`); not {', '.join(bad)}")
    if len(traffic) < 2:
        raise ValueError("name two versions or more with their weights, e.g. {v3: 90, v4: 10}")
    if any(w < 0 for w in traffic.values()) or sum(traffic.values()) <= 0:
        raise ValueError("weights are whole numbers >= 0 with at least one above 0, e.g. {v3: 90, v4: 10}")
    return traffic
