"""Seeded, stratified train/validation splits and k-fold indices."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from luodi.errors import ConfigError


def _can_stratify(y: pd.Series | None, n_valid: int) -> bool:
    if y is None:
        return False
    counts = y.value_counts()
    return len(counts) > 1 and counts.min() >= 2 and n_valid >= len(counts) and len(counts) < 0.5 * len(y)


def split_frame(
    df: pd.DataFrame, spec: dict[str, Any], label: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out validation rows per `spec` = {valid: fraction, seed, stratify, holdout: {column: values}}.

    `holdout` moves every row whose column takes one of the values into validation only (e.g. attack types
    unseen in training, to simulate a test set with new classes).
    """
    allowed = {"valid", "seed", "stratify", "holdout"}
    for k in spec:
        if k not in allowed:
            raise ConfigError(f"unknown key 'data.split.{k}'; expected one of {', '.join(sorted(allowed))}")
    frac = float(spec.get("valid", 0.1))
    if not 0 < frac < 1:
        raise ConfigError(f"'data.split.valid' must be a fraction between 0 and 1 (got {frac})")
    seed = int(spec.get("seed", 0))
    held = pd.Series(False, index=df.index)
    for col, values in (spec.get("holdout") or {}).items():
        if col not in df.columns:
            raise ConfigError(
                f"'data.split.holdout.{col}': no such column; columns: {', '.join(map(str, df.columns))}"
            )
        held |= df[col].astype(str).isin([str(v) for v in values])
    rest = df[~held]
    y = rest[label] if label and label in rest.columns and spec.get("stratify", True) else None
    n_valid = max(1, round(frac * len(rest)))
    strat = y if _can_stratify(y, n_valid) else None
    tr, va = train_test_split(rest, test_size=frac, random_state=seed, stratify=strat)
    va = pd.concat([va, df[held]])
    return tr.reset_index(drop=True), va.reset_index(drop=True)


def kfold_indices(n: int, folds: int, seed: int = 0, y: Any = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, valid_idx) per fold; stratified when labels `y` are given and all classes are large."""
    if folds < 2:
        raise ConfigError(f"'folds' must be at least 2 (got {folds})")
    idx = np.arange(n)
    if y is not None:
        y = np.asarray(y)
        _, counts = np.unique(y, return_counts=True)
        if counts.min() >= folds and len(counts) < 0.5 * n:
            return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(idx, y))
    return list(KFold(folds, shuffle=True, random_state=seed).split(idx))
