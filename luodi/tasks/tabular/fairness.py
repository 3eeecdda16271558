"""Fairness mitigation of a tabular binary app (`train.fairness`): one decision threshold per group of the
sensitive column, chosen on held-out probabilities (out-of-fold with `inner_folds`, else the validation rows,
the same rows the calibrator sees).

Why thresholds and not fairlearn's ThresholdOptimizer: its decisions are randomized between two thresholds, so
the same record can get two answers. Here a record's label is `probability >= threshold of its group` (same answer
twice) and the probability stays the model's calibrated one. Stored as JSON in preprocess.json (no pickle).

The search: every group picks the threshold whose rate is nearest a common target (selection rate for
demographic parity; a (TPR, FPR) point for equalized odds); over a grid of targets, the most accurate choice whose
gap on the fitting rows is within `tolerance` wins. Selecting nobody has no gap, so a choice always exists; a
tolerance of 0 usually ends there (in a classifier that is fair and useless).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from luodi.errors import BadRequest, ConfigError
from luodi.evaluate.fairness import group_labels

GRID = 201  # target selection rates for demographic parity
EO_GRID = 51  # target TPR x FPR points for equalized odds


@dataclass
class GroupRates:
    """A group's candidate thresholds (descending) and what each gives on the fitting rows."""

    thresholds: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    selected: np.ndarray  # rows selected
    correct: np.ndarray  # rows decided right
    n: int

    @classmethod
    def of(cls, scores: np.ndarray, y: np.ndarray) -> GroupRates:
        order = np.argsort(-scores, kind="stable")
        s, t = scores[order], y[order]
        # cut after each distinct score: select the top k rows (k = 0 .. n)
        last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
        k = np.r_[0, last + 1]
        tp = np.r_[0, np.cumsum(t)[last]]
        fp = k - tp
        pos, neg = t.sum(), len(t) - t.sum()
        thresholds = np.r_[np.nextafter(s[0], np.inf) if len(s) else 1.0, s[last]]  # select score >= it
        correct = tp + (neg - fp)
        return cls(
            thresholds=thresholds,
            tpr=tp / pos if pos else np.zeros(len(k)),
            fpr=fp / neg if neg else np.zeros(len(k)),
            selected=k,
            correct=correct,
            n=len(t),
        )


def _spread(v: np.ndarray) -> np.ndarray:
    return v.max(0) - v.min(0)


def search(
    scores: np.ndarray, y: np.ndarray, groups: np.ndarray, constraint: str, tolerance: float
) -> dict[str, float]:
    """Group -> threshold on the positive-class probability (see the module docstring)."""
    names = sorted(set(groups.tolist()))
    rates = [GroupRates.of(scores[groups == g], y[groups == g]) for g in names]
    if constraint == "demographic_parity":
        targets = np.linspace(0, 1, GRID)
        picks = [np.abs(r.selected[None, :] / r.n - targets[:, None]).argmin(1) for r in rates]
        gap = _spread(np.stack([r.selected[i] / r.n for r, i in zip(rates, picks, strict=True)]))
    else:
        t, f = np.meshgrid(np.linspace(0, 1, EO_GRID), np.linspace(0, 1, EO_GRID))
        t, f = t.ravel(), f.ravel()
        picks = [
            np.maximum(np.abs(r.tpr[None, :] - t[:, None]), np.abs(r.fpr[None, :] - f[:, None])).argmin(1)
            for r in rates
        ]
        tprs = np.stack([r.tpr[i] for r, i in zip(rates, picks, strict=True)])
        fprs = np.stack([r.fpr[i] for r, i in zip(rates, picks, strict=True)])
        gap = np.maximum(_spread(tprs), _spread(fprs))
    correct = np.sum([r.correct[i] for r, i in zip(rates, picks, strict=True)], axis=0)
    ok = gap <= tolerance + 1e-12
    best = int(np.argmax(np.where(ok, correct, -1))) if ok.any() else int(np.argmin(gap))
    return {g: float(r.thresholds[i[best]]) for g, r, i in zip(names, rates, picks, strict=True)}


@dataclass
class GroupThresholds:
    """Fitted per-group thresholds; groups not seen in fitting use `fallback` (0.5: the unmitigated decision)."""

    sensitive: str
    constraint: str
    thresholds: dict[str, float]
    bins: list[float] | None = None
    fallback: float = 0.5
    fit_rows: dict[str, Any] = field(default_factory=dict, repr=False)  # in memory only (bench, tests)

    @classmethod
    def fit(cls, frame: pd.DataFrame, scores: np.ndarray, y: np.ndarray, options: Any) -> GroupThresholds:
        """`options`: the app's train.fairness (constraint, sensitive, bins, tolerance)."""
        col = options.sensitive
        if col not in frame.columns:
            raise ConfigError(
                f"'train.fairness.sensitive': column '{col}' not in the data; "
                f"columns are: {', '.join(map(str, frame.columns))}"
            )
        try:
            groups = group_labels(frame[col], options.bins)
        except ValueError as e:
            raise ConfigError(f"'train.fairness.bins': column '{col}': {e}") from e
        y = np.asarray(y).astype(int)
        thresholds = search(np.asarray(scores, float), y, groups, options.constraint, options.tolerance)
        out = cls(col, options.constraint, thresholds, list(options.bins) if options.bins else None)
        out.fit_rows = {"scores": np.asarray(scores, float), "y": y, "groups": groups}
        return out

    def selected(self, frame: pd.DataFrame, scores: np.ndarray) -> np.ndarray:
        """True where the positive class is chosen: the record's probability >= its group's threshold."""
        if self.sensitive not in frame.columns:
            raise BadRequest(
                f"field '{self.sensitive}' is required: the app's decisions are per group of it (train.fairness)",
                param=self.sensitive,
            )
        try:
            groups = group_labels(frame[self.sensitive], self.bins)
        except ValueError as e:
            raise BadRequest(f"field '{self.sensitive}': {e}", param=self.sensitive) from e
        cut = np.array([self.thresholds.get(g, self.fallback) for g in groups], dtype=float)
        return np.asarray(scores, float) >= cut

    def to_json(self) -> dict[str, Any]:
        return {
            "sensitive": self.sensitive,
            "constraint": self.constraint,
            "bins": self.bins,
            "thresholds": self.thresholds,
            "fallback": self.fallback,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> GroupThresholds | None:
        if not d:
            return None
        return cls(d["sensitive"], d["constraint"], dict(d["thresholds"]), d.get("bins"), d.get("fallback", 0.5))
