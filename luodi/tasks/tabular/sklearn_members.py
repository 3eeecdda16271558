"""Random-forest and RBF-SVM members of the tabular ensemble.

Fitted with scikit-learn on the standardized + one-hot matrix, converted to ONNX with skl2onnx and
predicted with onnxruntime, so a run stores `forest.onnx` / `svm.onnx` and never a pickle. Classifiers give
class probabilities (the SVM's from Platt scaling fitted on 5-fold decision values), regressors one value per row.
The SVM fits at most `svm_max_rows` rows (a stratified sample of larger tables): its cost grows with rows squared.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from luodi.options.tabular import TabularOptions

SKLEARN_MEMBERS = ("forest", "svm")


def sklearn_estimator(kind: str, regression: bool, opts: TabularOptions, seed: int) -> Any:
    """The unfitted scikit-learn model of the `kind` member (forest | svm) with the app's options."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.svm import SVC, SVR

    if kind == "forest":
        cls = RandomForestRegressor if regression else RandomForestClassifier
        return cls(
            n_estimators=opts.forest_trees,
            min_samples_leaf=opts.forest_min_leaf,
            max_features=mf if isinstance(mf := opts.forest_max_features, str) else float(mf),  # 1 = all
            n_jobs=opts.threads,
            random_state=seed,
        )
    if regression:
        return SVR(C=opts.svm_C, gamma=opts.svm_gamma)
    svm = SVC(C=opts.svm_C, gamma=opts.svm_gamma, random_state=seed)
    return CalibratedClassifierCV(svm, method="sigmoid", cv=5, ensemble=False)  # one SVM, Platt on 5-fold scores


def fit_onnx(
    kind: str, x: np.ndarray, y: np.ndarray, sw: np.ndarray | None, regression: bool, opts: TabularOptions, seed: int
) -> bytes:
    """Fit the `kind` member (forest | svm) and return it as serialized ONNX."""
    from skl2onnx import to_onnx

    model = sklearn_estimator(kind, regression, opts, seed)
    if kind == "svm" and len(x) > opts.svm_max_rows:
        rows = svm_sample(y, opts.svm_max_rows, regression, seed)
        x, y, sw = x[rows], y[rows], None if sw is None else sw[rows]
    model.fit(x, y, sample_weight=sw)
    options = None if regression else {id(model): {"zipmap": False}}
    with warnings.catch_warnings():  # skl2onnx's SVC converter reads attributes scikit-learn 1.9 deprecates
        warnings.simplefilter("ignore", FutureWarning)
        return to_onnx(model, x[:1].astype(np.float32), options=options).SerializeToString()


def svm_sample(y: np.ndarray, n: int, regression: bool, seed: int) -> np.ndarray:
    """Sorted indices of n rows (stratified by class for classifiers) the SVM member is fitted on."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    counts = None if regression else np.bincount(y)
    ok = counts is not None and counts[counts > 0].min() >= 2 and len(y) - n >= (counts > 0).sum()
    strat = y if ok else None  # stratifying needs >= 2 rows per class and a class's worth left out
    keep, _ = train_test_split(idx, train_size=n, random_state=seed, stratify=strat)
    return np.sort(keep)


class OnnxMember:
    """A stored forest / SVM member: (n, k) class probabilities, or (n, 1) predictions for regression."""

    def __init__(self, blob: bytes, threads: int = 1):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = max(1, threads)
        self.blob = blob
        self.session = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def predict(self, x: np.ndarray, regression: bool) -> np.ndarray:
        outs = self.session.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})
        if regression:
            return outs[0].reshape(len(x), 1).astype(np.float64)
        p = outs[1].astype(np.float64)
        return p / p.sum(1, keepdims=True)
