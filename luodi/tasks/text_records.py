"""Request records of text apps: the `text` of each, with errors that name the bad record."""

from __future__ import annotations

from typing import Any

from luodi.errors import BadRequest


def records_texts(records: list[dict[str, Any]], field: str = "text") -> list[str]:
    """Pull `text` out of request records, with an error naming the bad record."""
    if not isinstance(records, list):
        raise BadRequest('expected a list of records like {"text": "..."}')
    texts = []
    for i, r in enumerate(records):
        t = r.get(field) if isinstance(r, dict) else None
        if not isinstance(t, str) or not t.strip():
            raise BadRequest(
                f'records[{i}].{field}: expected a non-empty string, got {t!r}; send {{"{field}": "your text"}}',
                param=field,
            )
        texts.append(t)
    return texts
