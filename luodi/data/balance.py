"""Class imbalance: balanced class weights and random over/under-sampling (seeded)."""

from __future__ import annotations

import numpy as np


def class_weights(y: np.ndarray) -> dict[int, float]:
    """n / (k * count_c) per class c: rare classes weigh more, the weights average to 1 over rows."""
    classes, counts = np.unique(y, return_counts=True)
    return {int(c): len(y) / (len(classes) * n) for c, n in zip(classes, counts, strict=True)}


def sample_weights(y: np.ndarray, mode: str) -> np.ndarray | None:
    if mode != "balanced":
        return None
    w = class_weights(y)
    return np.array([w[int(v)] for v in y], dtype=np.float32)


def resample(y: np.ndarray, mode: str, seed: int = 0) -> np.ndarray:
    """Row indices after resampling: `oversample` repeats minority rows, `undersample` drops majority rows."""
    idx = np.arange(len(y))
    if mode == "none":
        return idx
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    target = counts.max() if mode == "oversample" else counts.min()
    out = []
    for c, n in zip(classes, counts, strict=True):
        rows = idx[y == c]
        if n == target:
            out.append(rows)
        else:
            out.append(rng.choice(rows, size=target, replace=mode == "oversample"))
    res = np.concatenate(out)
    rng.shuffle(res)
    return res
