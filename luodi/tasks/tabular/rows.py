"""Records as the members' matrices, two ways with the same numbers: through pandas (any input the task
accepts; tables for evaluation and fitting) or straight from the request's dicts (`RowCoder`, for single
records: one pass over the record for every cross-fitted member instead of a DataFrame, rank / recode copies
and a dense matrix per member).

Why: serving one record of credit-risk (5 members x 5 cross-fitted copies) spent ~20 ms of CPU in pandas
building 5 x 3 small matrices; the models themselves take a few. The direct coder reproduces
`Preprocessor.lgb_matrix` / `dense_matrix` (after `rank_columns` and `Coding.recode`) bit for bit for the
values JSON carries (numbers, strings, null); any other value (a number as a string, a bool, a number in a
category column) makes `parse` answer None and the caller takes the pandas path, so conversions and their
errors stay exactly those of `Preprocessor`. tests/test_explain.py checks both give the same matrices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

Matrices = Callable[[str], np.ndarray]  # "lgb" | "dense" | "coded" -> that matrix of one member
NUMBER = (int, float, np.integer, np.floating)


class _NeedsPandas(Exception):
    """A value the direct coder does not convert itself (the pandas path decides what it means)."""


class PandasRows:
    """The members' matrices of a DataFrame of records, built the way fitting and evaluation build them."""

    def __init__(self, task: Any, df: pd.DataFrame):
        task.prep.check(df)
        self.n, self.df = len(df), df
        self.frames = task._frames(df)  # ranks and the coding, made once for all cross-fitted members
        self.members = task.members or [task]
        self.caches: dict[int, dict[str, np.ndarray]] = {}

    def matrices(self, j: int) -> Matrices:
        m, cache = self.members[j], self.caches.setdefault(j, {})

        def get(key: str) -> np.ndarray:
            if key not in cache:
                if key == "lgb":
                    cache[key] = m.prep.lgb_matrix(self.frames["shared"])
                elif key == "coded":
                    cache[key] = m.coded_prep.dense_matrix(self.frames["coded"])
                else:
                    cache[key] = m.prep.dense_matrix(self.frames["shared"])
            return cache[key]

        return get


class _Plan:
    """One fitted Preprocessor as index arrays into the parsed rows: its numeric sources and its categories."""

    def __init__(self, prep: Any, source_of: Callable[[str], tuple], coder: RowCoder):
        self.num = np.array([coder.numeric_slot(source_of(c)) for c in prep.numeric], dtype=np.intp)
        self.cat = np.array([coder.category_slot(c) for c in prep.categorical], dtype=np.intp)
        self.columns = np.arange(len(self.cat))
        width = max([len(coder.vocab[c]) + 1 for c in prep.categorical], default=1)
        self.lut = np.full((len(prep.categorical), width), -1, dtype=np.int64)  # global id -> this prep's code
        for j, c in enumerate(prep.categorical):
            for code, v in enumerate(prep.categories[c]):
                self.lut[j, coder.vocab[c][v]] = code
        self.log = np.array([c in set(prep.log1p) for c in prep.numeric], dtype=bool)
        self.medians = np.array([prep.medians[c] for c in prep.numeric], dtype=np.float64)
        self.means = np.array([prep.means[c] for c in prep.numeric], dtype=np.float64)
        self.stds = np.array([prep.stds[c] for c in prep.numeric], dtype=np.float64)
        sizes = [len(prep.categories[c]) for c in prep.categorical]
        self.offsets = len(prep.numeric) + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        self.width = len(prep.numeric) + sum(sizes)

    def codes(self, cat: np.ndarray) -> np.ndarray:
        return self.lut[self.columns, cat[:, self.cat]]

    def lgb(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """= Preprocessor.lgb_matrix: raw numbers (NaN kept) + category codes (NaN for unknown)."""
        codes = self.codes(cat).astype(np.float64)
        codes[codes < 0] = np.nan
        return np.hstack([num[:, self.num], codes])

    def dense(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """= Preprocessor.dense_matrix: standardized numbers (missing -> median), one-hot categories, float32."""
        x = num[:, self.num]
        if self.log.any():
            x[:, self.log] = np.log1p(np.maximum(x[:, self.log], 0))
        x = (np.where(np.isnan(x), self.medians, x) - self.means) / self.stds
        out = np.zeros((len(num), self.width), dtype=np.float32)
        out[:, : len(self.num)] = np.minimum(np.maximum(x, -10), 10)  # np.clip's numbers, without its wrapper
        codes = self.codes(cat)
        r, c = np.nonzero(codes >= 0)
        out[r, self.offsets[c] + codes[r, c]] = 1.0
        return out


class RowCoder:
    """The task's records -> every cross-fitted member's matrices, without pandas (see the module docstring).

    Parsed rows are two arrays: `num` (n, slots) float64, one slot per distinct numeric source a member reads
    (a raw number, a rank in a listed order, a `column=value` indicator), and `cat` (n, columns) int64, each
    category column's value as an id in the union of the members' categories (unknown or missing: the last)."""

    def __init__(self, task: Any):
        self.features: list[str] = list(task.prep.features)
        self.sources: list[tuple] = []
        self.slots: dict[tuple, int] = {}
        self.cat_columns: list[str] = []
        self.vocab: dict[str, dict[str, int]] = {}
        members = task.members or [task]
        for m in members:
            for c in m.prep.categorical:
                ids = self.vocab.setdefault(c, {})
                for v in m.prep.categories[c]:
                    ids.setdefault(v, len(ids))
            if m.coded_prep is not None:
                for c in m.coded_prep.categorical:
                    ids = self.vocab.setdefault(c, {})
                    for v in m.coded_prep.categories[c]:
                        ids.setdefault(v, len(ids))
        self.plans = []
        for m in members:
            recoded = {*m.ordinal, *m.coding.ordinal, *m.coding.indicators} if m.coded_prep is not None else set()
            if set(m.ordinal) & set(m.prep.categorical) or recoded & set(getattr(m.coded_prep, "categorical", [])):
                raise ValueError("a ranked or recoded column is read as a category: only the pandas path codes it")
            shared = _Plan(m.prep, lambda c, m=m: ("rank", c, m.ordinal[c]) if c in m.ordinal else ("raw", c), self)
            coded = None
            if m.coded_prep is not None:
                coded = _Plan(m.coded_prep, lambda c, m=m: self._coded_source(m, c), self)
            self.plans.append((shared, coded))
        self.owner = np.array([self.features.index(s[1]) for s in self.sources], dtype=np.intp)
        self.cat_owner = np.array([self.features.index(c) for c in self.cat_columns], dtype=np.intp)

    @staticmethod
    def _coded_source(m: Any, c: str) -> tuple:
        """Where a column of the coding's frame comes from (Coding.recode over the shared ranks)."""
        coding = m.coding
        if "=" in c and c not in m.prep.features:
            col, value = c.split("=", 1)
            if col in coding.indicators:
                return ("ind", col, value)
        if c in coding.ordinal:
            return ("rank", c, coding.ordinal[c])
        if c in m.ordinal:
            return ("rank", c, m.ordinal[c])
        return ("raw", c)

    def numeric_slot(self, source: tuple) -> int:
        key = (source[0], source[1], tuple(source[2]) if source[0] == "rank" else source[2:])
        if key not in self.slots:
            self.slots[key] = len(self.sources)
            kind, col = source[0], source[1]
            rank = {v: float(i) for i, v in enumerate(source[2])} if kind == "rank" else None
            self.sources.append((kind, col, rank if kind == "rank" else source[2] if kind == "ind" else None))
        return self.slots[key]

    def category_slot(self, c: str) -> int:
        if c not in self.cat_columns:
            self.cat_columns.append(c)
        return self.cat_columns.index(c)

    def parse(self, records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
        """(num, cat) of checked records, or None when a value needs pandas' conversion."""
        try:
            num = np.array([[_number(r[col], kind, arg) for kind, col, arg in self.sources] for r in records])
            cat = np.array([[self._category(r[c], c) for c in self.cat_columns] for r in records], dtype=np.int64)
        except _NeedsPandas:
            return None
        return num.reshape(len(records), len(self.sources)), cat.reshape(len(records), len(self.cat_columns))

    def _category(self, v: Any, c: str) -> int:
        ids = self.vocab[c]
        if v is None or (isinstance(v, float) and v != v):
            return len(ids)
        if not isinstance(v, str):
            raise _NeedsPandas
        return ids.get(v.strip(), len(ids))

    def variants(
        self,
        rows: tuple[np.ndarray, np.ndarray],
        typical: tuple[np.ndarray, np.ndarray],
        rec: np.ndarray,
        feat: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows rec[i] with feature feat[i] alone set to the typical record's value (each an ablation)."""
        num, cat = rows
        swap_n = self.owner[None, :] == feat[:, None]
        swap_c = self.cat_owner[None, :] == feat[:, None]
        return np.where(swap_n, typical[0], num[rec]), np.where(swap_c, typical[1], cat[rec])

    def matrices(self, num: np.ndarray, cat: np.ndarray) -> ArrayRows:
        return ArrayRows(self, num, cat)


class ArrayRows:
    """Parsed rows: each member's matrices on demand (the PandasRows interface)."""

    def __init__(self, coder: RowCoder, num: np.ndarray, cat: np.ndarray):
        self.coder, self.num, self.cat, self.n = coder, num, cat, len(num)
        self.caches: dict[int, dict[str, np.ndarray]] = {}

    def matrices(self, j: int) -> Matrices:
        shared, coded = self.coder.plans[j]
        cache = self.caches.setdefault(j, {})

        def get(key: str) -> np.ndarray:
            if key not in cache:
                plan = coded if key == "coded" else shared
                cache[key] = plan.lgb(self.num, self.cat) if key == "lgb" else plan.dense(self.num, self.cat)
            return cache[key]

        return get


def _number(v: Any, kind: str, arg: Any) -> float:
    """One numeric source's value, as rank_columns / Coding.recode / Preprocessor.numeric_frame compute it."""
    if v is None or (isinstance(v, float) and v != v):
        return np.nan
    if kind == "raw":
        if isinstance(v, NUMBER) and not isinstance(v, (bool, np.bool_)) and abs(v) < 1e300:
            return float(v)
        raise _NeedsPandas  # also an int float() cannot hold: pandas' error, as before
    if not isinstance(v, str):
        raise _NeedsPandas
    if kind == "rank":
        return arg.get(v.strip(), np.nan)
    return float(v.strip() == arg)
