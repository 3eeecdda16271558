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

from luodi.errors import ConfigError

SKLEARN_MEMBERS = ("forest", "svm")
SKLEARN_OPTIONS = {
    "forest_trees": 500,
    "forest_min_leaf": 3,
    "forest_max_features": "sqrt",  # features tried per split: sqrt | log2 | a fraction in (0, 1]
    "svm_C": 1.0,
    "svm_gamma": "scale",  # RBF width: scale | auto | a positive number
    "svm_max_rows": 10_000,  # the SVM's cost grows with rows squared: above this it fits a stratified sample
}


def _positive(v: Any, integer: bool = False) -> bool:
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    return ok_type and not isinstance(v, bool) and v > 0


def check_options(opts: dict[str, Any]) -> None:
    """Reject bad forest / SVM options before anything is trained, naming the key."""
    checks = {
        "forest_trees": (_positive(opts["forest_trees"], integer=True), "a positive integer"),
        "forest_min_leaf": (_positive(opts["forest_min_leaf"], integer=True), "a positive integer"),
        "forest_max_features": (
            opts["forest_max_features"] in ("sqrt", "log2")
            or (_positive(opts["forest_max_features"]) and opts["forest_max_features"] <= 1),
            "sqrt, log2 or a fraction in (0, 1]",
        ),
        "svm_C": (_positive(opts["svm_C"]), "a positive number"),
        "svm_gamma": (
            opts["svm_gamma"] in ("scale", "auto") or _positive(opts["svm_gamma"]),
            "scale, auto or a positive number",
        ),
        "svm_max_rows": (
            _positive(opts["svm_max_rows"], integer=True) and opts["svm_max_rows"] >= 50,
            "an integer >= 50",
        ),
    }
    for key, (ok, expected) in checks.items():
        if not ok:
            raise ConfigError(f"'model.options.{key}' must be {expected} (got {opts[key]!r})")


def _estimator(kind: str, regression: bool, opts: dict[str, Any], seed: int) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.svm import SVC, SVR

    if kind == "forest":
        cls = RandomForestRegressor if regression else RandomForestClassifier
        return cls(
            n_estimators=opts["forest_trees"],
            min_samples_leaf=opts["forest_min_leaf"],
            max_features=mf if isinstance(mf := opts["forest_max_features"], str) else float(mf),  # 1 = all
            n_jobs=int(opts["threads"]),
            random_state=seed,
        )
    if regression:
        return SVR(C=float(opts["svm_C"]), gamma=opts["svm_gamma"])
    svm = SVC(C=float(opts["svm_C"]), gamma=opts["svm_gamma"], random_state=seed)
    return CalibratedClassifierCV(svm, method="sigmoid", cv=5, ensemble=False)  # one SVM, Platt on 5-fold scores


def fit_onnx(
    kind: str, x: np.ndarray, y: np.ndarray, sw: np.ndarray | None, regression: bool, opts: dict[str, Any], seed: int
) -> bytes:
    """Fit the `kind` member (forest | svm) and return it as serialized ONNX."""
    from skl2onnx import to_onnx

    model = _estimator(kind, regression, opts, seed)
    if kind == "svm" and len(x) > opts["svm_max_rows"]:
        rows = svm_sample(y, int(opts["svm_max_rows"]), regression, seed)
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
