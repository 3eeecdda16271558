"""Ratings files of a recommendation app: MovieLens u.data (headerless user, item, rating, timestamp) or a
csv / tsv with a header named by data.columns, and item names (u.item: id|title|...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from luodi.errors import ConfigError

COLUMNS = ("user", "item", "rating")


def read_ratings(path: Path, columns: dict[str, Any], fmt: str | None) -> pd.DataFrame:
    """Ratings as a frame with columns user, item (strings) and rating (float).

    Headerless numeric files (MovieLens u.data: user, item, rating, timestamp, tab-separated) are
    recognised; files with a header use data.columns to name the user/item/rating columns.
    """
    if path.is_dir():
        cand = path / "u.data"
        if not cand.exists():
            raise ConfigError(f"'data.path' folder {path} has no u.data; point data.path at the ratings file")
        path = cand
    sep = "," if (fmt == "csv" or path.suffix == ".csv") else "\t" if fmt in ("tsv", "u.data") else None
    first = path.open(encoding="utf-8", errors="replace").readline()
    if sep is None:
        sep = "\t" if "\t" in first else "," if "," in first else r"\s+"
    fields = [f for f in (first.split(sep) if sep != r"\s+" else first.split()) if f.strip()]
    headerless = len(fields) >= 3 and all(_is_number(f) for f in fields[:3])
    try:
        if headerless:
            df = pd.read_csv(path, sep=sep, header=None, engine="python" if sep == r"\s+" else "c")
            df = df.iloc[:, :3]
            df.columns = list(COLUMNS)
        else:
            df = pd.read_csv(path, sep=sep, engine="python" if sep == r"\s+" else "c")
            names = {
                role: str(columns.get(role, default))
                for role, default in (("user", "user_id"), ("item", "item_id"), ("rating", "rating"))
            }
            missing = [f"data.columns.{r} = '{c}'" for r, c in names.items() if c not in df.columns]
            if missing:
                raise ConfigError(
                    f"{path}: columns not found: {', '.join(missing)}; columns are {list(df.columns)}"
                )
            df = df[[names["user"], names["item"], names["rating"]]]
            df.columns = list(COLUMNS)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ConfigError(f"'data.path': {path} is not a ratings table ({e})") from e
    ratings = pd.to_numeric(df["rating"], errors="coerce")
    if ratings.isna().any():
        row = int(ratings.isna().to_numpy().argmax())
        raise ConfigError(f"{path}: rating in row {row + 1} is not a number ({df['rating'].iloc[row]!r})")
    return pd.DataFrame(
        {
            "user": df["user"].astype(str).str.strip(),
            "item": df["item"].astype(str).str.strip(),
            "rating": ratings.astype(float),
        }
    )


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_item_names(path: Path) -> dict[str, str]:
    """MovieLens u.item (id|title|...) or a csv/tsv whose first two columns are id and name."""
    text = path.read_bytes().decode("latin-1")
    sep = "|" if "|" in text.split("\n", 1)[0] else "\t" if "\t" in text.split("\n", 1)[0] else ","
    out = {}
    for line in text.splitlines():
        parts = line.split(sep)
        if len(parts) >= 2:
            out[parts[0].strip()] = parts[1].strip()
    return out
