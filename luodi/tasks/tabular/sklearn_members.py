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


class OnnxBatch:
    """Several stored forest / SVM members as one onnxruntime session, so a prediction of every cross-fitted
    copy's forest and SVM is one call instead of one per member (the same graphs, prefixed and side by side:
    the same numbers; what one call saves is onnxruntime's and Python's per-call cost, which single records
    pay ten times in credit-risk)."""

    def __init__(self, members: list[OnnxMember], threads: int = 1):
        import onnx
        import onnxruntime as ort
        from onnx import compose

        merged, self.outputs = None, []
        for i, m in enumerate(members):
            model = compose.add_prefix(onnx.load_from_string(m.blob), f"m{i}_")
            self.outputs.append([o.name for o in model.graph.output])
            merged = model if merged is None else compose.merge_models(merged, model, io_map=[])
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = max(1, threads)
        self.session = ort.InferenceSession(merged.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self.inputs = [f"m{i}_{m.input}" for i, m in enumerate(members)]

    def predict(self, xs: list[np.ndarray], regression: bool) -> list[np.ndarray]:
        """Each member's OnnxMember.predict of its matrix xs[i]."""
        names = [outs[0] if regression else outs[1] for outs in self.outputs]
        feeds = {name: np.ascontiguousarray(x, dtype=np.float32) for name, x in zip(self.inputs, xs, strict=True)}
        out = []
        for x, p in zip(xs, self.session.run(names, feeds), strict=True):
            if regression:
                out.append(p.reshape(len(x), 1).astype(np.float64))
            else:
                p = p.astype(np.float64)
                out.append(p / p.sum(1, keepdims=True))
        return out
