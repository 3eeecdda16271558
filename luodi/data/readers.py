"""Read tables from csv / tsv / jsonl / json / parquet / whitespace files or scikit-learn datasets."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from luodi.data.inmemory import InMemoryFile
from luodi.errors import BadRequest, ConfigError

FORMATS = ("csv", "tsv", "jsonl", "json", "parquet", "whitespace", "sklearn:<name>")
_SKLEARN = {"breast_cancer", "iris", "wine", "digits", "diabetes"}


def datasets_root() -> Path:
    """LUODI_DATASETS, else ../shared/datasets from the CWD, else from the repository root."""
    env = os.environ.get("LUODI_DATASETS")
    if env:
        return Path(env).expanduser()
    cwd = Path.cwd() / ".." / "shared" / "datasets"
    if cwd.is_dir():
        return cwd.resolve()
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets").resolve()


def expand_path(path: str | os.PathLike) -> Path:
    """Expand ${LUODI_DATASETS} (with its default), other ${VARS} and ~ in a data path (an upload held in
    memory, luodi.data.inmemory, is read as it is)."""
    if isinstance(path, InMemoryFile):
        return path
    s = (
        str(path)
        .replace("${LUODI_DATASETS}", str(datasets_root()))
        .replace("$LUODI_DATASETS", str(datasets_root()))
    )
    return Path(os.path.expandvars(s)).expanduser()  # other $VARS / ${VARS}; unknown ones stay as written


def guess_format(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return {
        "csv": "csv",
        "tsv": "tsv",
        "txt": "csv",
        "data": "csv",
        "test": "csv",
        "jsonl": "jsonl",
        "ndjson": "jsonl",
        "json": "json",
        "parquet": "parquet",
        "pq": "parquet",
    }.get(ext, "csv")


def read_table(
    path: str | os.PathLike | None,
    fmt: str | None = None,
    options: dict[str, Any] | None = None,
    names: list[str] | None = None,
    field: str = "data.path",
) -> pd.DataFrame:
    """Read one table. `options` go to the reader (e.g. comment, header, na_values, sep).

    `names` gives column names to headerless files. Errors name `field` and what to fix.
    """
    options = dict(options or {})
    if fmt and fmt.startswith("sklearn:"):
        return _sklearn_frame(fmt.split(":", 1)[1], field)
    if path is None:
        raise ConfigError(
            f"'{field}' is missing: give a file path (csv, tsv, jsonl, json, parquet) "
            "or set data.format to sklearn:<name>"
        )
    p = expand_path(path)
    if not p.exists():
        raise ConfigError(
            f"'{field}': file '{p}' not found (from '{path}'); set LUODI_DATASETS or fix the path"
        )
    fmt = fmt or guess_format(p)
    try:
        if fmt in ("csv", "tsv", "whitespace"):
            kw: dict[str, Any] = {"skipinitialspace": True, "na_values": ["?"]}
            if fmt == "tsv":
                kw["sep"] = "\t"
            if fmt == "whitespace":
                kw["sep"] = r"\s+"
            if names:
                kw["header"] = None
                kw["names"] = names
            kw.update(options)
            df = pd.read_csv(p, **kw)
        elif fmt == "jsonl":
            df = pd.read_json(p, lines=True)
        elif fmt == "json":
            raw = json.loads(p.read_text())
            if isinstance(raw, dict):
                key = options.get("records_key") or next(
                    (k for k, v in raw.items() if isinstance(v, list)), None
                )
                raw = raw.get(key, []) if key else [raw]
            df = pd.DataFrame(raw)
        elif fmt == "parquet":
            df = pd.read_parquet(p)
        else:
            raise ConfigError(f"'data.format': unknown format '{fmt}'; expected one of {', '.join(FORMATS)}")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise BadRequest(f"could not read '{p}' as {fmt}: {e}", param=field) from e
    df = df.dropna(how="all")
    if names and len(df.columns) != len(names):
        raise ConfigError(
            f"'{field}': '{p}' has {len(df.columns)} columns but data.columns.names lists {len(names)}"
        )
    return df.reset_index(drop=True)


def _sklearn_frame(name: str, field: str) -> pd.DataFrame:
    if name not in _SKLEARN:
        raise ConfigError(
            f"'data.format': unknown scikit-learn dataset '{name}'; available: {', '.join(sorted(_SKLEARN))}"
        )
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    df = bunch.frame.copy()
    if name != "diabetes" and hasattr(bunch, "target_names"):
        df["target"] = [str(bunch.target_names[i]) for i in bunch.target]
    return df


def input_file(path: str | os.PathLike, what: str = "a csv, tsv, json, jsonl or parquet file") -> Path:
    """The path of a prediction input file; a missing path or a folder is a 400 naming the file."""
    p = path if isinstance(path, InMemoryFile) else Path(path)
    if not p.exists():
        raise BadRequest(f"input file '{p}' not found", param="input")
    if p.is_dir():
        raise BadRequest(f"input '{p}' is a folder; this app reads {what}", param="input")
    return p


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read prediction inputs from a csv / tsv / json / jsonl / parquet file as a list of dicts."""
    p = input_file(path)
    if p.suffix.lower() == ".json":
        raw = json.loads(p.read_text())
        if isinstance(raw, dict):
            raw = raw.get("inputs", raw.get("records", [raw]))
        if not isinstance(raw, list):
            raise BadRequest(f"'{p}': expected a JSON object or a list of objects", param="input")
        return raw
    df = read_table(p, guess_format(p), field="input")
    return [{k: _plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def read_app_table(
    path: str | os.PathLike | None,
    fmt: str | None,
    options: dict[str, Any] | None,
    names: list[str] | None,
    label: str | None,
    field: str = "data",
) -> pd.DataFrame:
    """A table app's file: `read_table`, plus for apps whose data is headerless (`names` =
    data.columns.names) files with a header row (in the app's format or the one the suffix says) and lines
    without the label field (for prediction; evaluation then asks for the label). A field count that fits
    neither is an error naming both counts, instead of silently misaligned columns."""
    opts = dict(options or {})
    if path is None or not names or "header" in opts or (fmt or "").startswith("sklearn:"):
        return read_table(path, fmt, opts, names, field=field)
    p = expand_path(path)
    by_suffix = guess_format(p)
    fmt = by_suffix if by_suffix in ("json", "jsonl", "parquet") else fmt or by_suffix  # records keep their names
    if fmt in ("json", "jsonl", "parquet") or not p.is_file():
        return read_table(path, fmt, opts, None if fmt in ("json", "jsonl", "parquet") else names, field=field)
    first = _first_line(p, opts.get("comment"), field)

    def fields_as(f: str) -> list[str]:
        sep = {"tsv": "\t", "whitespace": None}.get(f, opts.get("sep", ",") if f == fmt else ",")
        return [t.strip() for t in first.split(sep)] if first else []

    def is_header(fields: list[str]) -> bool:  # at least half of the fields are column names
        hits = len(set(fields) & set(names))
        return hits > 0 and 2 * hits >= len(fields)

    # a header row in the app's format, else in the one the suffix says (a .csv for a whitespace app)
    header = next((f for f in dict.fromkeys((fmt, by_suffix)) if is_header(fields_as(f))), None)
    if header:
        return read_table(p, header, opts if header == fmt else {}, None, field=field)
    n, without = len(fields_as(fmt)), [c for c in names if c != label]
    if n not in (len(names), len(without)) and first:
        expected = f"{len(names)}" + (f" (or {len(without)} without the label '{label}')" if label else "")
        raise BadRequest(
            f"'{field}': '{p}' has {n} fields per line; expected {expected} as in data.columns.names, "
            "or a header row naming the fields",
            param=field,
        )
    return read_table(p, fmt, opts, names if n == len(names) else without, field=field)


def read_feature_rows(
    path: str | os.PathLike,
    fmt: str | None,
    options: dict[str, Any] | None,
    names: list[str] | None,
    label: str | None,
) -> list[dict[str, Any]]:
    """Prediction inputs for a table app (`luodi predict --input FILE`), label field dropped: JSON records,
    tables with a header, or lines in the app's own headerless format (see `read_app_table`)."""
    p = input_file(path)
    if p.suffix.lower() == ".json" or not names:
        rows = read_records(p)
    else:
        df = read_app_table(p, fmt, options, names, label, field="input")
        rows = [{k: _plain(v) for k, v in r.items()} for r in df.to_dict(orient="records")]
    return [{k: v for k, v in r.items() if k != label} for r in rows] if label else rows


def _first_line(p: Path, comment: str | None, field: str) -> str:
    """The first non-empty, non-comment line of a text file."""
    try:
        with p.open(encoding="utf-8") as f:
            for line in f:
                s = line.strip()
                if s and not (comment and s.startswith(comment)):
                    return s
    except UnicodeDecodeError as e:
        raise BadRequest(f"'{field}': '{p}' is not a text file: {e}", param=field) from e
    return ""


def _plain(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None
    if hasattr(v, "item"):
        return v.item()
    return v
