"""`model.options` of a recommendation app (Bayesian matrix factorization sampled by Gibbs sampling)."""

from __future__ import annotations

from pydantic import Field, model_validator

from luodi.options.strict import Strict


class RecommendationOptions(Strict):
    """`model.options` of a recommendation app (model.type bpmf)."""

    factors: int = Field(10, ge=1, le=200, description="latent factors per user and item")
    iterations: int = Field(300, ge=1, description="Gibbs sweeps")
    burn_in: int = Field(60, ge=0, description="first sweeps whose draws are not kept (must be < iterations)")
    thin: int = Field(5, ge=0, description="keep every thin-th draw after burn_in (0 or 1: every draw)")
    popularity: float = Field(
        2.0, description="weight of log(1 + item ratings) added to the predicted rating when ranking top-k"
    )

    @model_validator(mode="after")
    def _burn_in_first(self) -> RecommendationOptions:
        if self.burn_in >= self.iterations:
            raise ValueError(f"burn_in ({self.burn_in}) must be less than iterations ({self.iterations})")
        return self
