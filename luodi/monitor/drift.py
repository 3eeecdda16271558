"""Drift of served inputs against the training data, one score per feature.

The reference (drift_reference.json in the run folder) is made once from the run's training split: per numeric
feature the quantile bin edges and the share of training rows in each bin; per categorical feature the share of
each value (the 50 most common, the rest as one "other"); per free-text feature the centroid of the sentence
encoder's embeddings (luodi.embeddings) and the training texts' mean distance to it. It is derived from the
run's config and data, so like audit.html it is written beside the run's files, outside its manifest.

Scores: the population stability index, PSI = sum((live - ref) * ln(live / ref)) over the bins or values, for
numbers and categories (0.1: a small shift, 0.2 and above: a real one), less its expected value under no drift
((bins - 1) * (1 / live rows + 1 / reference rows)) so that a small window does not read as drift; for text the
distance between the live and the training centroids, less the distance n calm texts stray by chance (the
training texts' mean distance to their centroid / sqrt(n)), in units of that mean distance.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from luodi import atomic, crypto

REFERENCE = "drift_reference.json"
TOP_VALUES = 50
TEXT_SAMPLE = 500  # texts embedded for the reference, and at most for a live window
OTHER = "__other__"
_EPS = 1e-4


def _is_text(values: list[str]) -> bool:
    """Free text, not a category: many distinct values with several words each."""
    distinct = len(set(values))
    words = np.mean([len(v.split()) for v in values]) if values else 0
    return distinct > TOP_VALUES and words >= 3


def build_reference(columns: dict[str, list[Any]], bins: int, embed: Any = None) -> dict[str, Any]:
    """The profile of each training column (feature -> values); `embed(texts) -> unit vectors` for text columns
    (None: text columns are left out, with the reason)."""
    features: dict[str, Any] = {}
    for name, values in columns.items():
        present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if not present:
            continue
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
            x = np.asarray(present, dtype=np.float64)
            edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
            features[name] = {"kind": "numeric", "edges": edges.tolist(), "shares": _bin_shares(x, edges).tolist(),
                              "mean": float(x.mean()), "rows": len(x)}
            continue
        texts = [str(v) for v in present]
        if _is_text(texts):
            if embed is None:
                features[name] = {"kind": "text", "skipped": "no sentence encoder"}
                continue
            sample = texts[:: max(1, len(texts) // TEXT_SAMPLE)][:TEXT_SAMPLE]
            vecs = np.asarray(embed(sample), dtype=np.float64)
            centroid = vecs.mean(0)
            spread = float(np.linalg.norm(vecs - centroid, axis=1).mean())
            features[name] = {"kind": "text", "centroid": centroid.tolist(), "spread": spread, "rows": len(sample)}
            continue
        values_, counts = np.unique(texts, return_counts=True)
        order = np.argsort(-counts)[:TOP_VALUES]
        shares = {str(values_[i]): counts[i] / len(texts) for i in order}
        other = 1.0 - sum(shares.values())
        features[name] = {"kind": "categorical", "shares": {**shares, OTHER: max(other, 0.0)}, "rows": len(texts)}
    return {"features": features, "bins": bins}


def _bin_shares(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
    return counts / max(len(x), 1)


def psi(ref: np.ndarray, live_counts: np.ndarray) -> float:
    """Population stability index of the reference shares and the live counts. The live counts get half a row
    per bin spread as the reference spreads its rows (smoothing towards the reference): a rare bin a small window
    happens to leave empty would otherwise count as ln(share / 0), and 160 calm rows would read as drift."""
    r = np.clip(ref, _EPS, None)
    r = r / r.sum()
    prior = 0.5 * len(live_counts)
    lv = (live_counts + prior * r) / (live_counts.sum() + prior)
    return float(np.sum((lv - r) * np.log(lv / r)))


def _debiased(value: float, bins: int, n_live: int, n_ref: int) -> float:
    """PSI less what sampling noise alone gives on average, (bins - 1) * (1 / n_live + 1 / n_ref), floored at 0:
    160 calm rows in 10 bins read about 0.07 otherwise, and a window's size would move the score more than the
    data does."""
    return max(0.0, value - (max(bins, 1) - 1) * (1 / max(n_live, 1) + 1 / max(n_ref, 1)))


def score_feature(profile: dict[str, Any], values: list[Any], embed: Any = None) -> tuple[float | None, int]:
    """(drift score, rows scored) of one feature's live values against its reference profile; None: no score
    (no rows, or a text feature without an encoder)."""
    kind = profile["kind"]
    if kind == "numeric":
        x = []
        for v in values:
            try:
                f = float(v)
            except (TypeError, ValueError):
                continue
            if not math.isnan(f):
                x.append(f)
        if not x:
            return None, 0
        edges = np.asarray(profile["edges"])
        live = np.bincount(np.searchsorted(edges, np.asarray(x), side="right"), minlength=len(edges) + 1)
        return _debiased(psi(np.asarray(profile["shares"]), live.astype(np.float64)), len(live), len(x),
                         profile["rows"]), len(x)
    if kind == "categorical":
        ref = profile["shares"]
        texts = [str(v) for v in values if v is not None]
        if not texts:
            return None, 0
        keys = list(ref)
        counts = dict.fromkeys(keys, 0)
        for t in texts:
            counts[t if t in counts else OTHER] += 1
        live = np.asarray([counts[k] for k in keys], dtype=np.float64)
        shares = np.asarray([ref[k] for k in keys])
        return _debiased(psi(shares, live), int((shares > 0).sum()), len(texts), profile["rows"]), len(texts)
    texts = [str(v) for v in values if isinstance(v, str) and v.strip()][:TEXT_SAMPLE]
    if "centroid" not in profile or embed is None or not texts:
        return None, len(texts)
    centroid = np.asarray(embed(texts), dtype=np.float64).mean(0)
    dist = float(np.linalg.norm(centroid - np.asarray(profile["centroid"])))
    noise = profile["spread"] / math.sqrt(len(texts))  # how far the centroid of n calm texts strays by chance
    return max(0.0, dist - noise) / max(profile["spread"], 1e-9), len(texts)


def save_reference(path: Any, ref: dict[str, Any]) -> None:
    atomic.write_json(path, ref)


def load_reference(path: Any) -> dict[str, Any]:
    return crypto.read_json(path)  # sealed like the run's other files when runs are encrypted at rest
