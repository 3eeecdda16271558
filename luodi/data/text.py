"""Readers for text datasets in their original formats.

- labelled texts (banking77 CSV, clinc150 JSON, SMSSpamCollection TSV, any csv/tsv/jsonl) ->
  a DataFrame with columns `text`, `label` (and `part` when the file carries its own splits)
- CoNLL files (one token per line, NER tag in the last column) -> list of {"tokens", "tags"} sentences
- DailyDialog files (utterances separated by `__eou__`) -> list of dialogues (lists of utterances)
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from luodi.data.readers import expand_path, input_file
from luodi.errors import BadRequest

TEXT_FORMATS = ("csv", "tsv", "json", "jsonl", "sms", "injection-set")


def _existing(path: str | os.PathLike, field: str = "data.path") -> Path:
    if path is None or str(path) == "":
        raise BadRequest(f"{field} is empty: give the path of a data file", param=field)
    p = expand_path(path)
    if not p.exists():
        raise BadRequest(
            f"{field}: file '{p}' not found; check the path "
            f"(LUODI_DATASETS={os.environ.get('LUODI_DATASETS', '(unset)')})",
            param=field,
        )
    return p


def guess_format(p: Path) -> str:
    """Guess a text file's format from its name and first line."""
    suffix = p.suffix.lower().lstrip(".")
    if suffix in ("csv", "tsv", "json", "jsonl"):
        return suffix
    first = p.open(encoding="utf-8", errors="replace").readline()
    if re.match(r"^(ham|spam)\t", first):
        return "sms"
    if "\t" in first:
        return "tsv"
    return "csv"


def read_labelled_texts(
    path: str | os.PathLike,
    fmt: str | None = None,
    text_column: str = "text",
    label_column: str | None = "label",
    options: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Read labelled texts into a DataFrame with `text`, `label` (and `part` for multi-split JSON).

    `label_column=None` reads unlabelled texts (no `label` column needed). Formats: csv, tsv, jsonl,
    json (clinc150 style: {"train": [[text, label], ...], "val": ...} or a list of records), sms
    (`label<TAB>text` without a header, the SMSSpamCollection format).
    """
    p = _existing(path)
    fmt = (fmt or guess_format(p)).lower()
    options = options or {}
    if fmt == "injection-set":  # generated from the datasets folder, never shipped (luodi.data.injection_set)
        from luodi.data.injection_set import read_injection_set

        return read_injection_set(p, options)
    if fmt == "sms":
        rows = []
        with p.open(encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line:
                    continue
                if "\t" not in line:
                    raise BadRequest(
                        f"{p}:{n}: expected 'label<TAB>text' (SMSSpamCollection format), got {line[:60]!r}"
                    )
                label, text = line.split("\t", 1)
                rows.append((text, label))
        return pd.DataFrame(rows, columns=["text", "label"])
    if fmt in ("csv", "tsv"):
        sep = options.get("separator", "\t" if fmt == "tsv" else ",")
        header = options.get("header", True)
        df = pd.read_csv(
            p,
            sep=sep,
            header=0 if header else None,
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
        )
        if not header:
            df.columns = [str(c) for c in df.columns]
    elif fmt == "jsonl":
        df = pd.read_json(p, lines=True, dtype=False)
    elif fmt == "json":
        return _read_json_texts(p, text_column, label_column)
    else:
        raise BadRequest(
            f"data.format '{fmt}' is not a text format; use one of {', '.join(TEXT_FORMATS)}",
            param="data.format",
        )
    return _pick_columns(df, p, text_column, label_column)


def _pick_columns(df: pd.DataFrame, p: Path, text_column: str, label_column: str | None) -> pd.DataFrame:
    if text_column not in df.columns:
        raise BadRequest(
            f"{p}: no column '{text_column}' (columns: {', '.join(map(str, df.columns))}); "
            "set data.columns.text to the column holding the texts",
            param="data.columns.text",
        )
    out = pd.DataFrame({"text": df[text_column].astype(str)})
    if label_column is not None:
        if label_column not in df.columns:
            raise BadRequest(
                f"{p}: no column '{label_column}' (columns: {', '.join(map(str, df.columns))}); "
                "set data.columns.label to the column holding the labels",
                param="data.columns.label",
            )
        out["label"] = df[label_column].astype(str).values
    return out


def _read_json_texts(p: Path, text_column: str, label_column: str | None) -> pd.DataFrame:
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BadRequest(f"{p}: not valid JSON: {e}") from e
    if isinstance(raw, list):
        return _pick_columns(pd.DataFrame(raw), p, text_column, label_column)
    if not isinstance(raw, dict):
        raise BadRequest(f"{p}: expected a JSON object of splits or a list of records")
    rows = []
    for part, items in raw.items():
        if not isinstance(items, list):
            continue
        for item in items:
            if isinstance(item, list | tuple) and len(item) >= 2:
                rows.append((str(item[0]), str(item[1]), part))
            elif isinstance(item, dict) and text_column in item:
                rows.append((str(item[text_column]), str(item.get(label_column or "", "")), part))
            else:
                raise BadRequest(
                    f"{p}: key '{part}' holds {item!r}; expected [text, label] pairs "
                    "(clinc150 format) or records with a text field"
                )
    if not rows:
        raise BadRequest(f"{p}: no [text, label] pairs found under any key")
    df = pd.DataFrame(rows, columns=["text", "label", "part"])
    return df if label_column is not None else df.drop(columns=["label"])


def read_text_inputs(path: str | os.PathLike, text_column: str = "text") -> list[dict[str, Any]]:
    """Prediction inputs for text apps (`luodi predict --input FILE`), each {"text": ...}.

    JSON (a list of records or of strings, or clinc150-style splits) and JSON lines; a CSV / TSV whose header
    names `text_column` (banking77's test.csv); the SMSSpamCollection format; a CoNLL file (one sentence per
    input); anything else is plain text, one input per non-empty line. Labels in the file are ignored.
    """
    p = input_file(_existing(path, "input"), "a text file (one text per line), csv, tsv, json or jsonl")
    with p.open("rb") as f:
        if b"\0" in f.read(4096):  # an image, a wav, a zip: not texts
            raise BadRequest(f"input '{p}' is a binary file; this app reads texts (one per line, csv, json)",
                             param="input")
    suffix = p.suffix.lower()
    if suffix == ".json":
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise BadRequest(f"{p}: not valid JSON: {e}", param="input") from e
        if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            return [{"text": x} for x in raw]
        if isinstance(raw, dict) and isinstance(raw.get("inputs", raw.get("records")), list):
            return list(raw.get("inputs", raw.get("records")))
        texts = _read_json_texts(p, text_column, None).text
    elif suffix == ".jsonl":
        texts = _pick_columns(pd.read_json(p, lines=True, dtype=False), p, text_column, None).text
    else:
        with p.open(encoding="utf-8", errors="replace") as f:
            head = [line.strip() for line, _ in zip((x for x in f if x.strip()), range(5), strict=False)]
        first, fmt = (head or [""])[0], guess_format(p)
        if first.startswith("-DOCSTART-") or (len(head) >= 2 and all(_looks_conll(x) for x in head)):
            return [{"text": " ".join(s["tokens"])} for s in read_conll(p, to_bio=False)]
        if fmt == "sms" or suffix in (".csv", ".tsv") or text_column in _split_header(first, fmt):
            texts = read_labelled_texts(p, fmt, text_column, None).text
        else:
            lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
            texts = pd.Series([line.strip() for line in lines if line.strip()])
    out = [{"text": t} for t in texts]
    if not out:
        raise BadRequest(f"{p}: no texts found", param="input")
    return out


def _split_header(line: str, fmt: str) -> list[str]:
    return [c.strip().strip('"') for c in line.split("\t" if fmt == "tsv" else ",")]


def _looks_conll(line: str) -> bool:
    """'token POS chunk B-ORG'-style: whitespace-separated columns ending in a BIO tag."""
    cols = line.split()
    return 2 <= len(cols) <= 6 and bool(re.match(r"^(O|[BIES]-\S+)$", cols[-1]))


# ---------------------------------------------------------------- CoNLL


def read_conll(
    path: str | os.PathLike, tag_column: int = -1, to_bio: bool = True
) -> list[dict[str, list[str]]]:
    """Read a CoNLL file (token ... tag per line, blank line between sentences, -DOCSTART- skipped).

    IOB1 tags (CoNLL-2003) are converted to IOB2/BIO when `to_bio` (every entity starts with B-).
    """
    p = _existing(path)
    sentences: list[dict[str, list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush():
        if tokens:
            sentences.append({"tokens": tokens.copy(), "tags": iob1_to_bio(tags) if to_bio else tags.copy()})
        tokens.clear()
        tags.clear()

    with p.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                flush()
                continue
            if line.startswith("-DOCSTART-"):
                flush()
                continue
            cols = line.split()
            if len(cols) < 2:
                raise BadRequest(
                    f"{p}:{n}: expected 'token ... tag' columns (CoNLL format), got {line[:60]!r}"
                )
            tag = cols[tag_column]
            if tag != "O" and not re.match(r"^[BIES]-.+", tag):
                raise BadRequest(f"{p}:{n}: tag {tag!r} is not O, B-X or I-X; is this a CoNLL NER file?")
            tokens.append(cols[0])
            tags.append(tag)
    flush()
    if not sentences:
        raise BadRequest(f"{p}: no sentences found (CoNLL format: one 'token ... tag' per line)")
    return sentences


def iob1_to_bio(tags: list[str]) -> list[str]:
    """Convert IOB1 (I- may start an entity) to IOB2/BIO (B- starts every entity)."""
    out = []
    prev = "O"
    for t in tags:
        if t.startswith("I-") and (prev == "O" or prev[2:] != t[2:]):
            t = "B-" + t[2:]
        out.append(t)
        prev = t
    return out


# ---------------------------------------------------------------- DailyDialog


def clean_utterance(u: str) -> str:
    """Undo DailyDialog's pre-tokenisation spaces ("Say , Jim ." -> "Say, Jim.")."""
    u = u.strip()
    u = re.sub(r"\s+([,.!?;:%)])", r"\1", u)
    u = re.sub(r"([(])\s+", r"\1", u)
    u = re.sub(r"\s+(n't|'s|'re|'m|'ll|'ve|'d)\b", r"\1", u)
    u = re.sub(r"\s*’\s*", "’", u)
    return re.sub(r"\s{2,}", " ", u)


def read_dialogues(path: str | os.PathLike, dedupe: bool = True) -> list[list[str]]:
    """Read DailyDialog (`utt __eou__ utt __eou__` per line) or jsonl ({"turns": [...]}) dialogues."""
    p = _existing(path)
    if p.is_dir():
        files = sorted(p.glob("dialogues_*.txt"))
        files = [f for f in files if not re.search(r"_(act|emotion)_", f.name)]
        if not files:
            raise BadRequest(f"{p}: no dialogues_*.txt file in this folder (DailyDialog layout)")
        p = files[0]
    out: list[list[str]] = []
    seen: set[str] = set()
    with p.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if p.suffix == ".jsonl":
                rec = json.loads(line)
                turns = rec.get("turns") if isinstance(rec, dict) else rec
                if not isinstance(turns, list):
                    raise BadRequest(f'{p}:{n}: expected {{"turns": [utterance, ...]}}')
                turns = [str(t) for t in turns]
            else:
                if "__eou__" not in line:
                    raise BadRequest(
                        f"{p}:{n}: expected utterances separated by '__eou__' (DailyDialog format)"
                    )
                turns = [clean_utterance(u) for u in line.split("__eou__") if u.strip()]
            key = "\n".join(turns)
            if dedupe and key in seen:
                continue
            seen.add(key)
            if len(turns) >= 2:
                out.append(turns)
    if not out:
        raise BadRequest(f"{p}: no dialogues with at least two utterances")
    return out
