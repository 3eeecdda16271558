"""Probability calibration, stored as plain JSON: binary classifiers (Platt sigmoid or isotonic) and
multiclass log-probabilities (one temperature)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_calibrator(p: np.ndarray, y: np.ndarray, method: str) -> dict[str, Any] | None:
    """Fit on held-out scores p (positive-class probabilities) and 0/1 labels y."""
    if method == "none" or len(np.unique(y)) < 2:
        return None
    if method == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e4).fit(_logit(p).reshape(-1, 1), y)
        return {"method": "sigmoid", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p, y)
        return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    raise ValueError(f"unknown calibration '{method}'")


def apply_calibrator(p: np.ndarray, cal: dict[str, Any] | None) -> np.ndarray:
    if not cal:
        return p
    if cal["method"] == "sigmoid":
        return 1 / (1 + np.exp(-(cal["a"] * _logit(p) + cal["b"])))
    return np.interp(p, cal["x"], cal["y"])


def fit_temperature(log_probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimizing the negative log-likelihood of softmax(log_probs / T) on held-out rows
    (T > 1 softens over-confident scores, T < 1 sharpens under-confident ones)."""
    from scipy.optimize import minimize_scalar

    lp, y = np.asarray(log_probs, np.float64), np.asarray(y)

    def nll(log_t: float) -> float:
        z = lp / np.exp(log_t)
        z = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
        return float(-z[np.arange(len(y)), y].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def apply_temperature(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    """Renormalized log-probabilities of softmax(log_probs / temperature)."""
    z = np.asarray(log_probs) / temperature
    return z - np.logaddexp.reduce(z, axis=1, keepdims=True)
