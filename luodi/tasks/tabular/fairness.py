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

Several constraints at once (`constraint: [demographic_parity, equalized_odds]`, a tolerance each): `joint_search`
takes the largest group as the anchor and tries every one of its thresholds; each other group takes its most
accurate threshold whose rates (selection rate, TPR, FPR, as the constraints need) are within each tolerance of the
anchor's. With two groups this is the most accurate pair of thresholds within both tolerances on the fitting rows
(exact, no grid); with more, a box half as wide is tried too and every choice is checked on all pairs.
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


RATES = {"demographic_parity": ("selection",), "equalized_odds": ("tpr", "fpr")}


def tolerances_of(constraint: str | list[str], tolerance: float | dict[str, float]) -> dict[str, float]:
    """Constraint -> largest gap allowed, from the config's two forms (one string or a list; one number or one
    per constraint)."""
    named = [constraint] if isinstance(constraint, str) else list(constraint)
    return {c: float(tolerance[c]) if isinstance(tolerance, dict) else float(tolerance) for c in named}


def _rate_table(r: GroupRates, names: list[str]) -> np.ndarray:
    """Candidates x rates: the rates a constraint compares, at each of the group's thresholds."""
    cols = {"selection": r.selected / max(r.n, 1), "tpr": r.tpr, "fpr": r.fpr}
    return np.stack([cols[n] for n in names], 1)


def _range_argmax(values: np.ndarray) -> list[np.ndarray]:
    """Sparse table: level k holds, for each start i, the first index of the largest value in [i, i + 2^k)."""
    table = [np.arange(len(values))]
    span = 1
    while 2 * span <= len(values):
        prev = table[-1]
        left, right = prev[: len(prev) - span], prev[span:]
        table.append(np.where(values[right] > values[left], right, left))
        span *= 2
    return table


def _best_in(values: np.ndarray, table: list[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The first index of the largest value in each [lo, hi] (lo <= hi)."""
    level = np.floor(np.log2(hi - lo + 1)).astype(int)
    out = np.empty(len(lo), dtype=int)
    for k in np.unique(level):
        m = level == k
        a, b = table[k][lo[m]], table[k][hi[m] - (1 << k) + 1]
        out[m] = np.where(values[b] > values[a], b, np.where(values[a] > values[b], a, np.minimum(a, b)))
    return out


def joint_search(
    scores: np.ndarray, y: np.ndarray, groups: np.ndarray, tolerances: dict[str, float]
) -> dict[str, float]:
    """Group -> threshold: the most accurate choice whose every gap is within its tolerance on these rows (see the
    module docstring). Selecting nobody everywhere has no gap, so a choice always exists.

    Every rate grows as a group's threshold falls, so the thresholds of a group within a box around the anchor's
    rates are one contiguous run; a sparse table finds the most accurate of each run (n log n, not n^2)."""
    names = sorted(set(groups.tolist()))
    rates = [GroupRates.of(scores[groups == g], y[groups == g]) for g in names]
    kinds = [k for c in tolerances for k in RATES[c]]
    tol = np.array([tolerances[c] for c in tolerances for _ in RATES[c]]) + 1e-12
    tables = [_rate_table(r, kinds) for r in rates]
    anchor = int(np.argmax([r.n for r in rates]))  # ties: the first name
    others = [j for j in range(len(names)) if j != anchor]
    sparse = {j: _range_argmax(rates[j].correct) for j in others}
    a = tables[anchor]
    best: tuple[float, list[int]] = (-1.0, [])
    for width in (1.0, 0.5) if len(names) > 2 else (1.0,):
        total = rates[anchor].correct.astype(float)
        picks = {}
        for j in others:
            t = tables[j]
            lo = np.max([np.searchsorted(t[:, r], a[:, r] - width * tol[r], "left") for r in range(len(kinds))], 0)
            hi = np.min([np.searchsorted(t[:, r], a[:, r] + width * tol[r], "right") for r in range(len(kinds))], 0) - 1
            ok = lo <= hi
            pick = np.zeros(len(a), dtype=int)
            pick[ok] = _best_in(rates[j].correct, sparse[j], lo[ok], hi[ok])
            total = np.where(ok, total + rates[j].correct[pick], -np.inf)
            picks[j] = pick
        for i in np.argsort(-total, kind="stable"):
            if not np.isfinite(total[i]) or total[i] <= best[0]:
                break
            choice = [int(i) if j == anchor else int(picks[j][i]) for j in range(len(names))]
            chosen = np.stack([tables[j][c] for j, c in enumerate(choice)])
            if np.all(_spread(chosen) <= tol):  # always true for two groups
                best = (float(total[i]), choice)
                break
    return {g: float(r.thresholds[c]) for g, r, c in zip(names, rates, best[1], strict=True)}


def fit_gaps(scores: np.ndarray, y: np.ndarray, groups: np.ndarray, thresholds: dict[str, float]) -> dict[str, float]:
    """Both gaps of the chosen thresholds on the rows they were fitted on (stored, shown in the audit)."""
    from luodi.evaluate.fairness import differences

    cut = np.array([thresholds[g] for g in groups], dtype=float)
    d = differences(y, scores >= cut, groups)
    return {"demographic_parity": d["demographic_parity_difference"], "equalized_odds": d["equalized_odds_difference"]}


@dataclass
class GroupThresholds:
    """Fitted per-group thresholds; groups not seen in fitting use `fallback` (0.5: the unmitigated decision)."""

    sensitive: str
    constraint: str | list[str]  # one, as stored runs have it, or several at once
    thresholds: dict[str, float]
    bins: list[float] | None = None
    fallback: float = 0.5
    tolerance: dict[str, float] | None = None  # constraint -> largest gap allowed (None: a run stored before it)
    fit_gaps: dict[str, float] | None = None  # both gaps on the fitting rows
    fit_rows: dict[str, Any] = field(default_factory=dict, repr=False)  # in memory only (bench, tests)

    @classmethod
    def fit(cls, frame: pd.DataFrame, scores: np.ndarray, y: np.ndarray, options: Any) -> GroupThresholds:
        """`options`: the app's train.fairness (constraint: one or a list, sensitive, bins, tolerance: one number
        or one per constraint)."""
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
        scores = np.asarray(scores, float)
        tol = tolerances_of(options.constraint, options.tolerance)
        if isinstance(options.constraint, str):  # one constraint: the grid search, as before
            thresholds = search(scores, y, groups, options.constraint, tol[options.constraint])
        else:
            thresholds = joint_search(scores, y, groups, tol)
        constraint = options.constraint if isinstance(options.constraint, str) else list(options.constraint)
        out = cls(col, constraint, thresholds, list(options.bins) if options.bins else None, tolerance=tol,
                  fit_gaps=fit_gaps(scores, y, groups, thresholds))
        out.fit_rows = {"scores": scores, "y": y, "groups": groups}
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
            "tolerance": self.tolerance,
            "fit_gaps": self.fit_gaps,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> GroupThresholds | None:
        if not d:
            return None
        return cls(
            d["sensitive"], d["constraint"], dict(d["thresholds"]), d.get("bins"), d.get("fallback", 0.5),
            d.get("tolerance"), d.get("fit_gaps"),
        )
