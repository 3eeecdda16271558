"""`guard.pii` of an app: its free-text inputs (`text`, the `content` of chat `messages`) are redacted before the
model, a log or a store sees them. luodi.api hands `input_guard` to luodi.apps.predict, which sits below this package
(the NER behind the names is itself an app that luodi.apps loads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from luodi.privacy.config import PiiConfig

Records = list[dict[str, Any]]
InputGuard = Callable[[Records], tuple[Records, list[str]]]


def _texts(record: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(holder, key) of every free text in one input record."""
    out: list[tuple[Any, Any]] = []
    if isinstance(record.get("text"), str):
        out.append((record, "text"))
    for m in record.get("messages") or []:
        if isinstance(m, dict) and isinstance(m.get("content"), str):
            out.append((m, "content"))
    return out


def input_guard(cfg: PiiConfig) -> InputGuard:
    """A function that returns copies of records with their texts redacted, and the entity types removed."""

    def guard(records: Records) -> tuple[Records, list[str]]:
        from luodi.privacy.pii import redact  # Presidio loads on the first guarded prediction

        copies = [{**r, "messages": [dict(m) for m in r["messages"]]} if r.get("messages") else dict(r)
                  for r in records]
        slots = [slot for r in copies for slot in _texts(r)]
        if not slots:
            return copies, []
        done = redact([holder[key] for holder, key in slots], cfg)
        for (holder, key), r in zip(slots, done, strict=True):
            holder[key] = r["text"]
        return copies, sorted({t for r in done for t in r["removed"]})

    return guard
