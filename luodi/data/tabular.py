"""Tabular preprocessing fitted on training rows and stored as JSON: column roles, labels, encodings."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from luodi.errors import BadRequest, ConfigError

MAX_CATEGORIES = 200  # rarer values share one "other" code
COLUMN_ROLES = {"label", "names", "features", "drop", "categorical", "label_map", "positive", "strip"}


@dataclass
class Columns:
    """The app's data.columns for tabular data, validated."""

    label: str | None = None
    names: list[str] | None = None
    features: list[str] | None = None
    drop: list[str] = field(default_factory=list)
    categorical: list[str] | None = None
    label_map: dict[str, str] | None = None  # raw label -> label; "*" maps every other value
    positive: str | None = None
    strip: str = ""  # characters stripped from both ends of string labels, e.g. "." for adult.test

    @classmethod
    def from_config(cls, raw: dict[str, Any], need_label: bool = True) -> Columns:
        for k in raw:
            if k not in COLUMN_ROLES:
                raise ConfigError(
                    f"unknown key 'data.columns.{k}'; expected one of {', '.join(sorted(COLUMN_ROLES))}"
                )
        c = cls(**raw)
        if need_label and not c.label:
            raise ConfigError(
                "'data.columns.label' is missing: name the column to predict, e.g. `label: income`"
            )
        for k in ("names", "features", "drop", "categorical"):
            v = getattr(c, k)
            if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise ConfigError(f"'data.columns.{k}' must be a list of column names (got {v!r})")
        return c

    def map_labels(self, s: pd.Series) -> pd.Series:
        s = s.astype(str).str.strip()
        if self.strip:
            s = s.str.strip(self.strip + " ")
        if self.label_map:
            default = self.label_map.get("*")
            s = s.map(lambda v: self.label_map.get(v, default if default is not None else v))
        return s


def py_name(col: str, taken: set[str]) -> str:
    """A Python identifier for a column name (used for pydantic fields; the alias keeps the original)."""
    n = re.sub(r"\W+", "_", col).strip("_").lower() or "col"
    if n[0].isdigit():
        n = f"f_{n}"
    base, i = n, 2
    while n in taken or n in ("model_config", "model_fields"):
        n, i = f"{base}_{i}", i + 1
    taken.add(n)
    return n


@dataclass
class Preprocessor:
    """Numeric columns: median-imputed, standardized (for the MLP); categoricals: integer codes / one-hot."""

    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    medians: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)
    example: dict[str, Any] = field(default_factory=dict)
    log1p: list[str] = field(default_factory=list)  # heavy-tailed non-negative columns, log-scaled for nets

    @property
    def features(self) -> list[str]:
        return self.numeric + self.categorical

    @classmethod
    def fit(cls, df: pd.DataFrame, cols: Columns) -> Preprocessor:
        exclude = {cols.label, *cols.drop}
        feats = cols.features or [c for c in df.columns if c not in exclude]
        missing = [c for c in feats if c not in df.columns]
        if missing:
            raise ConfigError(
                f"'data.columns.features': columns {missing} not in the data; "
                f"columns are: {', '.join(map(str, df.columns))}"
            )
        if not feats:
            raise ConfigError("no feature columns left: check data.columns.features / drop")
        if cols.categorical is not None:
            cat = [c for c in feats if c in cols.categorical]
        else:
            cat = [
                c
                for c in feats
                if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])
            ]
        num = [c for c in feats if c not in cat]
        p = cls(numeric=num, categorical=cat)
        for c in num:
            x = pd.to_numeric(df[c], errors="coerce")
            if x.notna().any() and x.min() >= 0 and x.max() > 1000 * (x.quantile(0.5) + 1):
                p.log1p.append(c)
                x = np.log1p(x)
            med = float(x.median()) if x.notna().any() else 0.0
            x = x.fillna(med)
            p.medians[c], p.means[c] = med, float(x.mean())
            p.stds[c] = float(x.std()) or 1.0
        for c in cat:
            vc = df[c].dropna().astype(str).value_counts()
            p.categories[c] = [str(v) for v in vc.index[:MAX_CATEGORIES]]
        row = df.iloc[0]
        p.example = {
            c: (None if pd.isna(row[c]) else (float(row[c]) if c in num else str(row[c]))) for c in feats
        }
        return p

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Preprocessor:
        return cls(**d)

    def check(self, df: pd.DataFrame) -> None:
        missing = [c for c in self.features if c not in df.columns]
        if missing:
            raise BadRequest(
                f"missing feature column(s) {missing}; every row needs: {', '.join(self.features)}",
                param=missing[0],
            )

    def numeric_frame(self, df: pd.DataFrame) -> np.ndarray:
        try:  # fast path: every value already numeric or missing
            return np.array(df[self.numeric].to_numpy(dtype=np.float64, na_value=np.nan))
        except (ValueError, TypeError):
            return self._numeric_checked(df)

    def _numeric_checked(self, df: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(df), len(self.numeric)), dtype=np.float64)
        for j, c in enumerate(self.numeric):
            x = pd.to_numeric(df[c], errors="coerce")
            bad = x.isna() & df[c].notna() & (df[c].astype(str).str.strip() != "")
            if bad.any():
                v = df[c][bad].iloc[0]
                raise BadRequest(f"column '{c}' must be numeric (got {v!r})", param=c)
            out[:, j] = x.to_numpy(dtype=np.float64)
        return out

    def codes(self, df: pd.DataFrame) -> np.ndarray:
        """Category index per categorical column; unknown or missing values -> -1."""
        out = np.full((len(df), len(self.categorical)), -1, dtype=np.int64)
        for j, c in enumerate(self.categorical):
            lookup = {v: i for i, v in enumerate(self.categories[c])}
            out[:, j] = [lookup.get(str(v).strip(), -1) if not _isna(v) else -1 for v in df[c]]
        return out

    def lgb_matrix(self, df: pd.DataFrame) -> np.ndarray:
        """Raw numerics (NaN kept) + categorical codes (NaN for unknown), for LightGBM."""
        codes = self.codes(df).astype(np.float64)
        codes[codes < 0] = np.nan
        return np.hstack([self.numeric_frame(df), codes])

    def dense_matrix(self, df: pd.DataFrame) -> np.ndarray:
        """Standardized numerics (missing -> median) + one-hot categoricals, float32, for neural models."""
        num = self.numeric_frame(df)
        logs = set(self.log1p)
        for j, c in enumerate(self.numeric):
            col = np.log1p(np.maximum(num[:, j], 0)) if c in logs else num[:, j]
            col[np.isnan(col)] = self.medians[c]
            num[:, j] = (col - self.means[c]) / self.stds[c]
        parts = [np.clip(num, -10, 10).astype(np.float32)]
        codes = self.codes(df)
        for j, c in enumerate(self.categorical):
            oh = np.zeros((len(df), len(self.categories[c])), dtype=np.float32)
            ok = codes[:, j] >= 0
            oh[np.nonzero(ok)[0], codes[ok, j]] = 1.0
            parts.append(oh)
        return np.hstack(parts)


def _isna(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)
