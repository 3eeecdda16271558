"""The fairness blocks of an app file: `evaluate.fairness` (the audit: per-group metrics and gaps with bootstrap
intervals) and `train.fairness` (mitigation by per-group decision thresholds). They live beside the other typed
options (luodi.config holds them in EvaluateConfig / TrainConfig); luodi.tasks.tabular.fairness reads them. Imports
pydantic only."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from luodi.options.strict import Strict

FairnessConstraint = Literal["demographic_parity", "equalized_odds"]


class TrainFairnessConfig(Strict):
    """Fairness mitigation of a tabular binary app: per-group decision thresholds (deterministic). One constraint
    (a string, as stored runs have it) or several at once (a list), with one tolerance for all or one each."""

    constraint: FairnessConstraint | list[FairnessConstraint] = Field(
        description="what the thresholds equalize across groups: selection rates (demographic_parity), true and "
        "false positive rates (equalized_odds), or both at once: [demographic_parity, equalized_odds]"
    )
    sensitive: str = Field(description="the column whose groups are treated alike; predict requests must send it")
    bins: list[float] | None = Field(
        None, description="cut points that group a numeric sensitive column, e.g. [25] (age < 25, >= 25)"
    )
    tolerance: float | dict[str, float] = Field(
        0.01, description="the largest gap allowed on the held-out rows the thresholds are fitted on, in [0, 1]: "
        "one number for every constraint, or one per constraint, e.g. {demographic_parity: 0.02, "
        "equalized_odds: 0.05}; the most accurate thresholds within it win (selecting nobody has no gap)"
    )

    @field_validator("constraint", mode="before")
    @classmethod
    def _known(cls, v: Any) -> Any:
        """One clear message instead of one per branch of the union."""
        allowed = ("demographic_parity", "equalized_odds")
        items = v if isinstance(v, list) else [v]
        bad = [c for c in items if c not in allowed]
        if bad or not items or len(set(map(str, items))) != len(items):
            what = f"{bad[0]!r} is not a constraint" if bad else "a list of distinct constraints is needed"
            raise ValueError(f"{what}: demographic_parity, equalized_odds, or both: [demographic_parity, "
                             "equalized_odds]")
        return v

    @field_validator("tolerance", mode="before")
    @classmethod
    def _per_constraint(cls, v: Any, info: ValidationInfo) -> Any:
        values = list(v.values()) if isinstance(v, dict) else [v]
        if any(isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 1 for t in values):
            raise ValueError("a tolerance is a gap between rates, a number in [0, 1]: one, or one per constraint, "
                             "e.g. {demographic_parity: 0.02, equalized_odds: 0.05}")
        if isinstance(v, dict) and "constraint" in info.data:
            named = info.data["constraint"]
            named = [named] if isinstance(named, str) else named
            extra = [k for k in v if k not in named]
            if extra:
                raise ValueError(f"'{extra[0]}' is not one of the constraints ({', '.join(named)})")
            missing = [c for c in named if c not in v]
            if missing:
                raise ValueError(f"no tolerance for '{missing[0]}': give one per constraint, or one number")
        return v

    def tolerances(self) -> dict[str, float]:
        """Constraint -> the largest gap allowed (the one number, or each constraint's own)."""
        named = [self.constraint] if isinstance(self.constraint, str) else list(self.constraint)
        tol = self.tolerance
        return {c: float(tol[c]) if isinstance(tol, dict) else float(tol) for c in named}


class FairnessConfig(Strict):
    """The fairness audit of a tabular binary app: per-group metrics and gaps with bootstrap intervals."""

    sensitive: list[str] = Field(min_length=1, description="columns whose groups are compared, e.g. [sex, race]")
    bins: dict[str, list[float]] = Field(
        default_factory=dict, description="column -> cut points for numeric columns, e.g. {age: [25]}"
    )
    resamples: int = Field(200, ge=10, description="bootstrap resamples of each confidence interval")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")
    seed: int = Field(0, description="seed of the bootstrap")
