"""k-anonymity and distinct l-diversity for a table, by Mondrian generalization (LeFevre et al. 2006).

The rows are split recursively, one quasi-identifier at a time (the widest, relative to its whole range),
at the median (numbers) or between categories (ordered by frequency), for as long as both halves keep >= k rows
and >= l distinct sensitive values. Each final part becomes one equivalence class: its quasi-identifiers are
replaced by the part's range ("30-39") or category set ("Divorced|Separated"), every other column is kept as it
is. A table that cannot reach k / l as a whole is refused; rows without a number in a numeric quasi-identifier
are suppressed (dropped) within `max_suppression` (a missing category is a category). No well-kept library
generalizes tables this way; pycanon (bench/anonymize.py, tests) checks the result independently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, model_validator

from luodi.errors import BadRequest, ConfigError
from luodi.options.strict import Strict

MISSING = "(missing)"


class AnonymizeConfig(Strict):
    """`luodi anonymize`: which columns identify a person in combination, and how hidden they must be."""

    quasi: list[str] = Field(
        min_length=1,
        description="quasi-identifiers: columns that together could identify a "
        "person (age, zip code, sex, ...); they are generalized",
    )
    k: int = Field(10, ge=2, description="every combination of quasi-identifier values is shared by >= k rows")
    l: int = Field(  # noqa: E741 (the l of l-diversity)
        1,
        ge=1,
        description="distinct l-diversity: each such group holds >= l distinct values of `sensitive` (1: off)",
    )
    sensitive: str | None = Field(None, description="the sensitive column l-diversity protects (needed when l > 1)")
    max_suppression: float = Field(
        0.02,
        ge=0,
        le=1,
        description="largest share of rows that may be dropped (rows "
        "without a value in a numeric quasi-identifier; a missing category is a value)",
    )

    @model_validator(mode="after")
    def _sensitive_for_l(self) -> AnonymizeConfig:
        if self.l > 1 and not self.sensitive:
            raise ValueError("l-diversity (l > 1) needs `sensitive`: the column whose values each group must vary in")
        if self.sensitive in self.quasi:
            raise ValueError(f"'{self.sensitive}' is both sensitive and a quasi-identifier; it can be only one")
        return self


def anonymize_config(data: dict[str, Any]) -> AnonymizeConfig:
    """An AnonymizeConfig from CLI options or a request; the error names the field and what it expects."""
    try:
        return AnonymizeConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a rule across fields: its message names them
            raise ConfigError(f"anonymize: {msg}", param="l") from None
        name = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"anonymize: '{name}': {msg} (got {err.get('input')!r})", param=name) from None


@dataclass
class Anonymized:
    """The generalized table and what it cost."""

    frame: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


def read_source(source: str) -> pd.DataFrame:
    """An app YAML's whole table (its data.path, format and column names; nothing dropped), or a csv / tsv /
    json / jsonl / parquet file with a header row."""
    from luodi.data.readers import guess_format, input_file, read_app_table, read_table

    path = input_file(source, "an app YAML or a csv, tsv, json, jsonl or parquet file")
    if path.suffix.lower() not in (".yaml", ".yml"):
        return read_table(path, guess_format(path), field="DATA")
    from luodi.config import load_app_config

    d = load_app_config(path).data
    cols = d.columns or {}
    return read_app_table(d.path, d.format, d.options, cols.get("names"), cols.get("label"), field="data.path")


def _check_columns(df: pd.DataFrame, cfg: AnonymizeConfig) -> None:
    missing = [c for c in [*cfg.quasi, *([cfg.sensitive] if cfg.sensitive else [])] if c not in df.columns]
    if missing:
        raise BadRequest(
            f"column(s) {', '.join(map(repr, missing))} not in the table; it has: {', '.join(map(str, df.columns))}",
            param="quasi" if missing[0] in cfg.quasi else "sensitive",
        )


class _Column:
    """One quasi-identifier as codes 0..m-1 in split order: numbers by value, categories by frequency."""

    def __init__(self, values: pd.Series):
        self.numeric = pd.api.types.is_numeric_dtype(values)
        if not self.numeric:  # anonymize() drops rows without a number; a missing category is a value
            values = values.astype(object).where(values.notna(), MISSING).astype(str)
        if self.numeric:
            self.levels = np.sort(values.unique())
        else:
            counts = values.value_counts(sort=False)
            self.levels = np.array(sorted(counts.index, key=lambda v: (-counts[v], v)), dtype=object)
        self.codes = values.map({v: i for i, v in enumerate(self.levels)}).to_numpy(np.int64)
        self.span = max(1, len(self.levels) - 1)

    def width(self, codes: np.ndarray) -> float:
        """How much of the column's whole range the part still covers (0: one value)."""
        if self.numeric:
            lo, hi = self.levels[codes.min()], self.levels[codes.max()]
            full = self.levels[-1] - self.levels[0]
            return float((hi - lo) / full) if full else 0.0
        return (len(np.unique(codes)) - 1) / self.span

    def label(self, codes: np.ndarray) -> str:
        """The generalized value of a part: a range for numbers, the set of categories otherwise."""
        if self.numeric:
            lo, hi = self.levels[codes.min()], self.levels[codes.max()]
            return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
        return "|".join(sorted(str(v) for v in self.levels[np.unique(codes)]))


def _diverse(sensitive: np.ndarray | None, rows: np.ndarray, l: int) -> bool:  # noqa: E741
    return sensitive is None or len(np.unique(sensitive[rows])) >= l


def _split(
    rows: np.ndarray,
    col: _Column,
    k: int,
    sensitive: np.ndarray | None,
    l: int,  # noqa: E741
) -> tuple[np.ndarray, np.ndarray] | None:
    """The part cut in two at the median of `col` (ties kept together), if both halves stay k-anonymous and
    l-diverse; None otherwise."""
    codes = col.codes[rows]
    median = np.sort(codes)[len(codes) // 2]
    for cut in (median, median + 1):  # the median value goes left, else right (whichever leaves two halves)
        left = codes < cut
        n_left = int(left.sum())
        if k <= n_left <= len(rows) - k:
            a, b = rows[left], rows[~left]
            if _diverse(sensitive, a, l) and _diverse(sensitive, b, l):
                return a, b
    return None


def mondrian(df: pd.DataFrame, cfg: AnonymizeConfig) -> list[np.ndarray]:
    """The equivalence classes: row positions of each final part."""
    cols = [_Column(df[c]) for c in cfg.quasi]
    sensitive = df[cfg.sensitive].astype(str).to_numpy() if cfg.sensitive and cfg.l > 1 else None
    todo, parts = [np.arange(len(df))], []
    while todo:
        rows = todo.pop()
        widths = [c.width(c.codes[rows]) for c in cols]
        order = [j for j in np.argsort(widths, kind="stable")[::-1] if widths[j] > 0]  # the widest first
        halves = next((h for j in order if (h := _split(rows, cols[j], cfg.k, sensitive, cfg.l))), None)
        if halves:
            todo.extend(halves)
        else:
            parts.append(rows)
    return parts


def anonymize(df: pd.DataFrame, cfg: AnonymizeConfig) -> Anonymized:
    """The table with its quasi-identifiers generalized to k-anonymity (and distinct l-diversity), and a report:
    rows kept and suppressed, the classes' sizes, the k and l reached and the information lost (NCP)."""
    _check_columns(df, cfg)
    numeric = [c for c in cfg.quasi if pd.api.types.is_numeric_dtype(df[c])]
    incomplete = df[numeric].isna().any(axis=1).to_numpy()  # a missing category is a value of its own
    if incomplete.mean() > cfg.max_suppression:
        raise BadRequest(
            f"{int(incomplete.sum())} of {len(df)} rows miss a numeric quasi-identifier: more than max_suppression "
            f"{cfg.max_suppression:.0%} would be dropped; fill them in or raise max_suppression",
            param="max_suppression",
        )
    kept = df.loc[~incomplete].reset_index(drop=True)
    sens = kept[cfg.sensitive].astype(str) if cfg.sensitive else None
    if len(kept) < cfg.k or (sens is not None and sens.nunique() < cfg.l):
        raise BadRequest(
            f"the table cannot be {cfg.k}-anonymous and {cfg.l}-diverse as a whole ({len(kept)} rows"
            + (f", {sens.nunique()} distinct '{cfg.sensitive}' values" if sens is not None else "")
            + "); lower k or l",
            param="k",
        )
    parts = mondrian(kept, cfg)
    out = kept.copy()
    cols = [_Column(kept[c]) for c in cfg.quasi]
    ncp = np.zeros(len(kept))
    for name, col in zip(cfg.quasi, cols, strict=True):
        values = np.empty(len(kept), dtype=object)
        for rows in parts:
            codes = col.codes[rows]
            values[rows] = col.label(codes)
            ncp[rows] += col.width(codes)
        out[name] = values
    sizes = np.array([len(p) for p in parts])
    diversity = min(int(sens.iloc[p].nunique()) for p in parts) if sens is not None else None
    report = {
        "rows": len(df),
        "kept": len(kept),
        "suppressed": int(incomplete.sum()),
        "suppressed_share": round(float(incomplete.mean()), 6),
        "classes": len(parts),
        "k": cfg.k,
        "k_reached": int(sizes.min()),
        "l": cfg.l,
        "l_reached": diversity,
        "mean_class_size": round(float(sizes.mean()), 3),
        "ncp": round(float(ncp.mean() / len(cfg.quasi)), 6),  # 0: nothing generalized, 1: every value hidden
        "discernibility": int((sizes**2).sum()),
        "quasi": list(cfg.quasi),
        "sensitive": cfg.sensitive,
    }
    return Anonymized(out, report)


def check(df: pd.DataFrame, quasi: list[str], sensitive: str | None = None) -> dict[str, int | None]:
    """The k and distinct l a table actually has (the smallest group, its fewest distinct sensitive values)."""
    groups = df.groupby(quasi, dropna=False, sort=False)
    k = int(groups.size().min()) if len(df) else 0
    l = int(groups[sensitive].nunique().min()) if sensitive and len(df) else None  # noqa: E741
    return {"k": k, "l": l}
