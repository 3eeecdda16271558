"""Metrics for classifiers, regressors and anomaly detectors, plus the material the HTML report draws."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn import metrics as skm

CLASSIFICATION = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "f1_macro",
    "precision",
    "recall",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "ece",
)
REGRESSION = ("rmse", "mae", "r2")
LOWER_IS_BETTER = {"log_loss", "brier", "ece", "rmse", "mae", "loss", "wer", "cer", "perplexity"}


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in y (scikit-learn warns when only one class is present)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(skm.balanced_accuracy_score(y, pred))


def classification_metrics(
    y: np.ndarray, proba: np.ndarray, positive: int = 1, pred: np.ndarray | None = None
) -> dict[str, float]:
    """y: class indices (n,), proba: (n, k) probabilities; `positive` is the index of the positive class."""
    y = np.asarray(y).astype(int)
    proba = np.asarray(proba, dtype=np.float64)
    proba = proba / np.clip(proba.sum(1, keepdims=True), 1e-12, None)  # float32 softmax rounding
    k = proba.shape[1]
    pred = proba.argmax(1) if pred is None else np.asarray(pred).astype(int)
    out: dict[str, float] = {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": _balanced_accuracy(y, pred),
        "f1_macro": float(skm.f1_score(y, pred, average="macro", labels=list(range(k)), zero_division=0)),
    }
    present = np.unique(y)
    if k == 2:
        yb, s = (y == positive).astype(int), proba[:, positive]
        pb = (pred == positive).astype(int)
        out["f1"] = float(skm.f1_score(yb, pb, zero_division=0))
        out["precision"] = float(skm.precision_score(yb, pb, zero_division=0))
        out["recall"] = float(skm.recall_score(yb, pb, zero_division=0))
        if len(present) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(yb, s))
            out["pr_auc"] = float(skm.average_precision_score(yb, s))
        out["brier"] = float(np.mean((s - yb) ** 2))
    else:
        out["f1"] = out["f1_macro"]
        if len(present) == k:
            try:
                out["roc_auc"] = float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=list(range(k))))
            except ValueError:
                pass
    out["log_loss"] = float(skm.log_loss(y, proba, labels=list(range(k))))
    out["ece"] = expected_calibration_error(y, proba)
    return out


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    return {
        "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
        "mae": float(np.mean(np.abs(y - pred))),
        "r2": float(skm.r2_score(y, pred)) if len(y) > 1 else 0.0,
    }


def classification_report_data(
    y: np.ndarray, proba: np.ndarray, labels: list[str], positive: int = 1, pred: np.ndarray | None = None
) -> dict[str, Any]:
    """Metrics plus a "report" entry (y_true, y_pred, proba, labels) for the HTML report."""
    pred = np.asarray(proba).argmax(1) if pred is None else np.asarray(pred)
    out: dict[str, Any] = classification_metrics(y, proba, positive, pred)
    out["report"] = {
        "y_true": np.asarray(y).astype(int).tolist(),
        "y_pred": pred.astype(int).tolist(),
        "proba": np.round(np.asarray(proba, float), 6).tolist(),
        "labels": [str(c) for c in labels],
        "positive": int(positive),
    }
    return out


def per_class_table(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    p, r, f, s = skm.precision_recall_fscore_support(
        y, pred, labels=list(range(len(labels))), zero_division=0
    )
    return [
        {
            "class": labels[i],
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i in range(len(labels))
    ]


def is_lower_better(metric: str) -> bool:
    return metric.split("/")[-1] in LOWER_IS_BETTER
