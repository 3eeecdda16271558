"""Fairness of a binary classifier across the groups of a sensitive column: per-group metrics (fairlearn
MetricFrame) and the demographic-parity and equalized-odds differences with bootstrap confidence intervals,
because a small group moves these numbers a lot by chance.

"Selected" means predicted positive (the app's positive class). Numeric sensitive columns (an age) are grouped
by cut points: bins [25] gives "< 25" and ">= 25".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MISSING = "missing"


def group_labels(values: pd.Series | np.ndarray | list[Any], bins: list[float] | None = None) -> np.ndarray:
    """The group of each value as a string; with `bins`, numeric values fall into "< a", "a to < b", ">= b".
    Missing values form the group "missing". Raises ValueError for a non-numeric column given bins."""
    s = pd.Series(values).reset_index(drop=True)
    if not bins:
        return np.where(s.isna(), MISSING, s.astype(str).str.strip()).astype(object)
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna() & s.notna()
    if bad.any():
        raise ValueError(f"bins need numbers; got {s[bad].iloc[0]!r}")
    edges = sorted(float(b) for b in bins)
    names = [f"< {_fmt(edges[0])}"]
    names += [f"{_fmt(a)} to < {_fmt(b)}" for a, b in zip(edges, edges[1:], strict=False)]
    names.append(f">= {_fmt(edges[-1])}")
    idx = np.searchsorted(edges, num.to_numpy(np.float64), side="right")
    out = np.array(names, dtype=object)[np.minimum(idx, len(names) - 1)]
    out[num.isna().to_numpy()] = MISSING
    return out


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _rate(mask_num: np.ndarray, mask_den: np.ndarray) -> float:
    den = int(mask_den.sum())
    return float((mask_num & mask_den).sum() / den) if den else float("nan")


def group_table(y_true: Any, y_pred: Any, proba: Any, groups: Any) -> list[dict[str, Any]]:
    """One row per group: size, base rate, selection rate, TPR, FPR, accuracy and calibration (the mean
    predicted probability against the observed positive rate)."""
    from fairlearn.metrics import MetricFrame, count, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score

    y, pred, p = (np.asarray(a).astype(float) for a in (y_true, y_pred, proba))
    mf = MetricFrame(
        metrics={
            "count": count,
            "selection_rate": selection_rate,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
            "accuracy": accuracy_score,
        },
        y_true=y.astype(int),
        y_pred=pred.astype(int),
        sensitive_features=pd.Series(np.asarray(groups), name="group"),
    )
    means = pd.DataFrame({"g": np.asarray(groups), "p": p, "y": y}).groupby("g")
    rows = []
    for g, r in mf.by_group.iterrows():
        mean_p, observed = float(means["p"].mean()[g]), float(means["y"].mean()[g])
        rows.append(
            {
                "group": str(g),
                "count": int(r["count"]),
                "positive_rate": observed,
                "selection_rate": float(r["selection_rate"]),
                "tpr": float(r["tpr"]),
                "fpr": float(r["fpr"]),
                "accuracy": float(r["accuracy"]),
                "mean_probability": mean_p,
                "calibration_gap": mean_p - observed,
            }
        )
    return rows


def differences(y_true: Any, y_pred: Any, groups: Any) -> dict[str, float]:
    """fairlearn's demographic-parity difference (largest gap in selection rate) and equalized-odds difference
    (the larger of the largest TPR gap and the largest FPR gap)."""
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    y, pred, g = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int), np.asarray(groups)
    return {
        "demographic_parity_difference": float(demographic_parity_difference(y, pred, sensitive_features=g)),
        "equalized_odds_difference": float(equalized_odds_difference(y, pred, sensitive_features=g)),
    }


def _gaps(y: np.ndarray, pred: np.ndarray, codes: np.ndarray, k: int) -> tuple[float, float]:
    """The two differences from counts (the bootstrap's fast path; same definitions as fairlearn's)."""
    n = np.bincount(codes, minlength=k)
    sel = np.bincount(codes, weights=pred, minlength=k)
    pos = np.bincount(codes, weights=y, minlength=k)
    tp = np.bincount(codes, weights=y * pred, minlength=k)
    fp = sel - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = sel / n
        tpr = tp / pos
        fpr = fp / (n - pos)

    def spread(v: np.ndarray) -> float:
        v = v[np.isfinite(v)]
        return float(v.max() - v.min()) if len(v) else 0.0

    return spread(rates), max(spread(tpr), spread(fpr))


def bootstrap_differences(
    y_true: Any,
    y_pred: Any,
    groups: Any,
    resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Percentile intervals of both differences over `resamples` bootstrap samples, drawn within each group
    (every group keeps its size, so a small group is never dropped from a resample)."""
    y, pred = np.asarray(y_true).astype(float), np.asarray(y_pred).astype(float)
    names, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    members = [np.flatnonzero(codes == j) for j in range(len(names))]
    rng = np.random.default_rng(seed)
    draws = np.empty((resamples, 2))
    for b in range(resamples):
        idx = np.concatenate([m[rng.integers(0, len(m), len(m))] for m in members])
        draws[b] = _gaps(y[idx], pred[idx], codes[idx], len(names))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha], axis=0)
    point = differences(y, pred, groups)
    return {
        key: {"value": point[key], "low": float(low[j]), "high": float(high[j])}
        for j, key in enumerate(("demographic_parity_difference", "equalized_odds_difference"))
    }


def fairness_report(
    y_true: Any,
    y_pred: Any,
    proba: Any,
    sensitive: dict[str, Any],
    resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Per sensitive column (name -> group of each row): the group table and both differences with intervals."""
    return {
        col: {
            "groups": group_table(y_true, y_pred, proba, g),
            **bootstrap_differences(y_true, y_pred, g, resamples, confidence, seed),
        }
        for col, g in sensitive.items()
    }
