"""Linear classifiers stored as plain arrays (the TF-IDF features they read: luodi.tasks.tfidf).

Shared by text classification (embedding and TF-IDF heads) and speech recognition (a head over pretrained
speech embeddings); saved as safetensors + JSON, never pickled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from luodi.errors import BadRequest


class LinearHead:
    """A multinomial linear classifier stored as plain arrays (coef: (k, d), intercept: (k,))."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray):
        # C order matters: safetensors.numpy writes a Fortran-ordered array's buffer as if it were C order
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept = np.ascontiguousarray(intercept, dtype=np.float32)
        # (d, k) in C order: a sparse x @ coef.T would copy the whole transposed matrix on every call (12 ms
        # for clinc150's TF-IDF head, most of a single prediction)
        self.coef_t = np.ascontiguousarray(self.coef.T)

    def log_proba(self, x: Any) -> np.ndarray:
        # x in float32 like the weights: a float64 x (TF-IDF rows) made scipy upcast the whole (d, k) matrix on
        # every call (17 ms of clinc150's 24 ms prediction); the rows are small to cast
        z = np.asarray(x.astype(np.float32, copy=False) @ self.coef_t) + self.intercept
        if z.shape[1] == 1:  # binary: sklearn stores one row for the positive class
            z = np.hstack([np.zeros_like(z), z])
        return z - np.logaddexp.reduce(z, axis=1, keepdims=True)

    def tensors(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.coef": self.coef, f"{prefix}.intercept": self.intercept}

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray], prefix: str) -> LinearHead:
        return cls(t[f"{prefix}.coef"], t[f"{prefix}.intercept"])


def fit_logreg(x: Any, y: np.ndarray, n_classes: int, c: float, class_weight: str | None, seed: int) -> LinearHead:
    """Fit L2 logistic regression (multinomial) and keep only its arrays."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=3000, class_weight=class_weight, random_state=seed)
    clf.fit(x, y)
    if list(clf.classes_) != list(range(n_classes)):
        raise BadRequest("every label must occur in the training data; some labels have no training example")
    return LinearHead(clf.coef_, clf.intercept_)
