"""Linear classifiers stored as plain arrays, and TF-IDF features rebuilt from their vocabularies.

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
        z = np.asarray(x @ self.coef_t) + self.intercept
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


TFIDF_PARAMS = {
    "word": {"analyzer": "word", "ngram_range": (1, 2), "sublinear_tf": True, "lowercase": True},
    "char": {
        "analyzer": "char_wb",
        "ngram_range": (2, 5),
        "sublinear_tf": True,
        "lowercase": True,
        "min_df": 2,
    },
}


class TfidfFeatures:
    """Word 1-2-gram and char 2-5-gram TF-IDF, concatenated into one sparse matrix."""

    def __init__(self, vectorizers: dict):
        self.vectorizers = vectorizers

    def transform(self, texts: list[str]) -> Any:
        from scipy import sparse

        return sparse.hstack([v.transform(texts) for v in self.vectorizers.values()]).tocsr()


def fit_tfidf(texts: list[str]) -> TfidfFeatures:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vecs = {}
    for name, params in TFIDF_PARAMS.items():
        v = TfidfVectorizer(**params)
        try:
            v.fit(texts)
        except ValueError:  # too few texts for min_df
            v = TfidfVectorizer(**{**params, "min_df": 1}).fit(texts)
        vecs[name] = v
    return TfidfFeatures(vecs)


def tfidf_state(tf: TfidfFeatures) -> tuple[dict, dict[str, np.ndarray]]:
    vocab = {n: {k: int(i) for k, i in v.vocabulary_.items()} for n, v in tf.vectorizers.items()}
    return vocab, {n: v.idf_.astype(np.float32) for n, v in tf.vectorizers.items()}


def tfidf_from_state(vocab: dict, idf: dict[str, np.ndarray]) -> TfidfFeatures:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vecs = {}
    for name, params in TFIDF_PARAMS.items():
        v = TfidfVectorizer(**{k: p for k, p in params.items() if k != "min_df"}, vocabulary=vocab[name])
        v.idf_ = idf[name].astype(np.float64)
        vecs[name] = v
    return TfidfFeatures(vecs)
