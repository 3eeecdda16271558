"""Ordered categories as ranks, and `model.options.coding`: a second, compact coding of a table for some members.

A one-hot column per category value suits trees; a linear model on a few hundred rows over-fits that many
indicators. `coding` gives the members it names (e.g. `[linear]`) their own matrix in which the columns of
`coding.ordinal` are one rank each and the columns of `coding.indicators` keep a 0/1 column only for the
values listed (every other value is the baseline) — the compact coding UCI's `german.data-numeric` uses.
The other members keep the shared coding. Unknown values become missing (imputed with the training median).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from luodi.errors import BadRequest, ConfigError

CODED_MEMBERS = ("mlp", "linear", "forest", "svm")  # the members that read the dense (one-hot) matrix


def check_ordinal(value: Any, key: str) -> dict[str, list[str]]:
    """{column: [values in order]} with at least two values each, as strings."""
    if value is None:
        return {}
    if not (
        isinstance(value, dict)
        and all(isinstance(v, list) and len(v) >= 2 for v in value.values())
    ):
        raise ConfigError(
            f"'{key}' must map column names to their values in order, e.g. "
            f"{{savings: [low, medium, high]}} (got {value!r})"
        )
    return {str(k): [str(x) for x in v] for k, v in value.items()}


def rank_columns(df: pd.DataFrame, ranks: dict[str, list[str]], key: str) -> pd.DataFrame:
    """Each column of `ranks` -> the index of its value in the listed order (float; unknown or missing -> NaN)."""
    if not ranks:
        return df
    missing = [c for c in ranks if c not in df.columns]
    if missing:
        raise BadRequest(f"missing column '{missing[0]}' (listed in {key})", param=missing[0])
    df = df.copy()
    for c, order in ranks.items():
        rank = {v: float(i) for i, v in enumerate(order)}
        df[c] = np.array([np.nan if pd.isna(v) else rank.get(str(v).strip(), np.nan) for v in df[c]], np.float64)
    return df


@dataclass
class Coding:
    """model.options.coding, validated: which members read it, ranked columns, columns kept as a few indicators."""

    members: list[str] = field(default_factory=list)
    ordinal: dict[str, list[str]] = field(default_factory=dict)
    indicators: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_options(cls, raw: Any, shared_ordinal: dict[str, list[str]]) -> Coding | None:
        if raw is None:
            return None
        key = "model.options.coding"
        if not isinstance(raw, dict) or set(raw) - {"members", "ordinal", "indicators"}:
            raise ConfigError(
                f"'{key}' must be a mapping with keys members, ordinal, indicators, e.g. "
                "{members: [linear], ordinal: {property: [A121, A122, A123, A124]}, indicators: {purpose: [A40]}} "
                f"(got {raw!r})"
            )
        members = raw.get("members", ["linear"])
        if not (isinstance(members, list) and members and set(members) <= set(CODED_MEMBERS)):
            raise ConfigError(
                f"'{key}.members' must list members among {', '.join(CODED_MEMBERS)} (got {members!r})"
            )
        ordinal = check_ordinal(raw.get("ordinal"), f"{key}.ordinal")
        ind = raw.get("indicators") or {}
        if not (isinstance(ind, dict) and all(isinstance(v, list) and v for v in ind.values())):
            raise ConfigError(
                f"'{key}.indicators' must map column names to the values that get a 0/1 column, e.g. "
                f"{{purpose: [A40, A41]}} (got {ind!r})"
            )
        indicators = {str(k): [str(x) for x in v] for k, v in ind.items()}
        twice = sorted((set(ordinal) & set(indicators)) | ((set(ordinal) | set(indicators)) & set(shared_ordinal)))
        if twice:
            raise ConfigError(
                f"'{key}': column '{twice[0]}' is coded twice (in coding.ordinal, coding.indicators or "
                "model.options.ordinal); list it once"
            )
        if not (ordinal or indicators):
            raise ConfigError(f"'{key}' needs ordinal or indicators columns to recode")
        return cls(sorted(set(members), key=CODED_MEMBERS.index), ordinal, indicators)

    def recode(self, df: pd.DataFrame) -> pd.DataFrame:
        """The frame as these members see it: ranks, and indicator columns named `column=value`."""
        df = rank_columns(df, self.ordinal, "model.options.coding.ordinal")
        missing = [c for c in self.indicators if c not in df.columns]
        if missing:
            raise BadRequest(
                f"missing column '{missing[0]}' (listed in model.options.coding.indicators)", param=missing[0]
            )
        new = {}
        for c, values in self.indicators.items():
            s = df[c].map(lambda v: None if pd.isna(v) else str(v).strip())
            for v in values:
                new[f"{c}={v}"] = np.where(s.isna(), np.nan, (s == v).astype(np.float64))
        return pd.concat([df.drop(columns=list(self.indicators)), pd.DataFrame(new, index=df.index)], axis=1)

    def features(self, features: list[str]) -> list[str]:
        """The recoded frame's feature columns, in the original order."""
        out: list[str] = []
        for c in features:
            out += [f"{c}={v}" for v in self.indicators[c]] if c in self.indicators else [c]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"members": self.members, "ordinal": self.ordinal, "indicators": self.indicators}
