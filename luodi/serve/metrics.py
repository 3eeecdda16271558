"""Prometheus metrics, one registry per app: requests, engine load, tokens, TTFT and TPOT."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60)
_TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    """All metrics of one server; `render()` is the body of GET /metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "luodi_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "luodi_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("luodi_queue_depth", "Requests waiting for a decoding slot", registry=r)
        self.running = Gauge("luodi_running_sequences", "Sequences being decoded", registry=r)
        self.prompt_tokens = Counter("luodi_prompt_tokens", "Prompt tokens processed", registry=r)
        self.generated_tokens = Counter("luodi_generated_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram(
            "luodi_time_to_first_token_seconds",
            "Time from request to first token",
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "luodi_time_per_output_token_seconds",
            "Mean time between output tokens after the first, per request",
            buckets=_TPOT_BUCKETS,
            registry=r,
        )
        self.embedded_inputs = Counter("luodi_embedding_inputs", "Texts embedded", registry=r)
        self.app_drift = Gauge(
            "luodi_app_drift",
            "Drift of an app's served inputs against its training data per feature (PSI; text: centroid distance)",
            ["app", "feature"],
            registry=r,
        )
        self._drift_source: Callable[[], dict[tuple[str, str], float]] | None = None

    def bind_engine_stats(self, stats: Callable[[], dict[str, int]]) -> None:
        """Read queue depth and running sequences from the engine at scrape time."""
        self.queue_depth.set_function(lambda: float(stats().get("queue_depth", 0)))
        self.running.set_function(lambda: float(stats().get("running", 0)))

    def observe_generation(
        self, *, ttft: float | None, decode_seconds: float, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Record one finished (or cancelled) generation."""
        self.prompt_tokens.inc(prompt_tokens)
        self.generated_tokens.inc(completion_tokens)
        if ttft is not None:
            self.ttft.observe(ttft)
        if completion_tokens > 1 and decode_seconds > 0:
            self.tpot.observe(decode_seconds / (completion_tokens - 1))

    def bind_drift(self, scores: Callable[[], dict[tuple[str, str], float]]) -> None:
        """Read every app's drift scores ((app, feature) -> score; luodi.monitor.drift_scores) at scrape time."""
        self._drift_source = scores

    def set_drift(self, app: str, scores: dict[str, float | None]) -> None:
        for feature, score in scores.items():
            if score is not None:
                self.app_drift.labels(app, feature).set(score)

    def render(self) -> bytes:
        if self._drift_source is not None:
            try:
                for (app, feature), score in self._drift_source().items():
                    self.app_drift.labels(app, feature).set(score)
            except Exception:  # noqa: BLE001 - a scrape must answer even when the store cannot be read
                logging.getLogger("luodi.serve").warning("luodi_app_drift not refreshed", exc_info=True)
        return generate_latest(self.registry)


def route_template(scope) -> str:
    """The matched route's full template (`/v1/kb/{name}`), after the app has run; "unmatched" for a 404 path.
    FastAPI >= 0.16x keeps included routers' routes unprefixed in scope["route"] (`/{name}`) and the full path
    in its effective route context."""
    ctx = (scope.get("fastapi") or {}).get("effective_route_context")
    path = getattr(ctx, "path", None) or getattr(scope.get("route"), "path", None)
    return path or "unmatched"


class MetricsMiddleware:
    """Pure ASGI middleware counting every HTTP request by its route template (streaming-safe)."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        import time

        status = {"code": 500}
        start = time.perf_counter()

        async def _send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            path = route_template(scope)
            self.metrics.requests.labels(path, scope.get("method", ""), str(status["code"])).inc()
            self.metrics.request_seconds.labels(path).observe(time.perf_counter() - start)
