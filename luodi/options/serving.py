"""`serve.replicas` of an app file: the app's own predictor replicas when the server runs on Ray Serve (`luodi serve
--ray`), with their autoscaling. Lives beside the other typed options (luodi.config holds it in ServeConfig);
luodi.serve.ray_serve reads it. Imports pydantic only."""

from __future__ import annotations

from pydantic import Field, model_validator

from luodi.options.strict import Strict


class ReplicasConfig(Strict):
    """An app predicted by replicas of its own (a Ray Serve deployment per app) instead of inside the server's
    replicas: scaled on its own load, from `min` to `max`, aiming at `target_ongoing_requests` per replica."""

    min: int = Field(1, ge=0, description="fewest replicas (0: none while the app gets no requests)")
    max: int = Field(1, ge=1, description="most replicas (equal to min: that fixed number, no autoscaling)")
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="requests in flight per replica that the autoscaler aims at (it adds replicas above)"
    )
    max_ongoing_requests: int = Field(
        32, ge=1, description="requests one replica holds at most; more wait (must exceed target_ongoing_requests)"
    )
    cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves for each replica (fractions allowed)")

    @model_validator(mode="after")
    def _consistent(self) -> ReplicasConfig:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max}): lower min or raise max")
        if self.min != self.max and self.target_ongoing_requests >= self.max_ongoing_requests:
            raise ValueError(f"target_ongoing_requests ({self.target_ongoing_requests:g}) must be below "
                             f"max_ongoing_requests ({self.max_ongoing_requests}): a replica never holds more than "
                             "max, so the autoscaler would never add one")
        return self
