"""The one train/validation splitter (seeded, stratified where labels allow) and k-fold indices.

Every task holds out validation rows through `split_indices`, configured by `data.split` (luodi.config.
SplitConfig). Fractions round up like scikit-learn's `test_size` (`ceil(valid * rows)`); a count is taken as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from luodi.config import SplitConfig, format_validation_error
from luodi.errors import ConfigError


def as_split_config(spec: SplitConfig | Mapping[str, Any]) -> SplitConfig:
    """A SplitConfig from the typed config or a plain mapping of its keys (errors name `data.split.<key>`)."""
    if isinstance(spec, SplitConfig):
        return spec
    try:
        return SplitConfig.model_validate(dict(spec))
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "app", prefix="data.split")) from e


def _can_stratify(labels: Sequence[Any] | None, n_valid: int, n_train: int) -> bool:
    """Every class has two rows, both parts can hold one of each, and the labels look like classes."""
    if labels is None:
        return False
    counts = pd.Series(np.asarray(labels)).value_counts()
    k = len(counts)
    return k > 1 and counts.min() >= 2 and min(n_valid, n_train) >= k and k < 0.5 * len(labels)


def split_indices(
    n: int,
    spec: SplitConfig | Mapping[str, Any],
    labels: Sequence[Any] | None = None,
    held: np.ndarray | None = None,
    default_valid: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) indices of `n` rows: rows marked in the boolean mask `held` go to validation only; of the
    rest, `valid` (a fraction or a count; unset: `default_valid`) are drawn with `seed`, stratified by `labels`
    when `stratify` and the classes allow it, or the last ones when `shuffle` is false. Indices come in
    scikit-learn's drawn order (callers that need file order sort them)."""
    split = as_split_config(spec)
    rest = np.arange(n) if held is None else np.flatnonzero(~np.asarray(held, dtype=bool))
    extra = np.zeros(0, dtype=np.int64) if held is None else np.flatnonzero(held)
    v = split.valid if split.valid is not None else default_valid
    n_valid = math.ceil(v * len(rest)) if v < 1 else int(v)
    if not 0 < n_valid < len(rest):
        raise ConfigError(
            f"'data.split.valid' = {v} leaves no training or no validation rows out of {len(rest)}",
            param="data.split.valid",
        )
    if not split.shuffle:
        tr, va = rest[: len(rest) - n_valid], rest[len(rest) - n_valid :]
    else:
        strat = None
        if split.stratify and labels is not None:
            rest_labels = np.asarray(labels)[rest]
            strat = rest_labels if _can_stratify(rest_labels, n_valid, len(rest) - n_valid) else None
        tr, va = train_test_split(rest, test_size=n_valid, random_state=split.seed, stratify=strat)
    return np.asarray(tr), np.concatenate([va, extra]).astype(np.int64)


def held_out(mask: np.ndarray | Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) indices when validation is exactly the marked rows (speakers, named parts)."""
    m = np.asarray(mask, dtype=bool)
    return np.flatnonzero(~m), np.flatnonzero(m)


def split_frame(
    df: pd.DataFrame, spec: SplitConfig | Mapping[str, Any], label: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table rows split per `spec` (valid, seed, stratify by the `label` column, holdout: {column: values}).

    `holdout` moves every row whose column takes one of the values into validation only (e.g. attack types
    unseen in training, to simulate a test set with new classes).
    """
    split = as_split_config(spec)
    split.only("a table app", "valid", "seed", "stratify", "holdout")
    held = np.zeros(len(df), dtype=bool)
    for col, values in split.holdout.items():
        if col not in df.columns:
            raise ConfigError(
                f"'data.split.holdout.{col}': no such column; columns: {', '.join(map(str, df.columns))}"
            )
        held |= df[col].astype(str).isin([str(v) for v in values]).to_numpy()
    labels = df[label].to_numpy() if label and label in df.columns else None
    tr, va = split_indices(len(df), split, labels, held)
    return df.iloc[tr].reset_index(drop=True), df.iloc[va].reset_index(drop=True)


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
