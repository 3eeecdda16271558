"""`guard.pii` for the server (LUODI_GUARD_PII): chat and completion requests are redacted before the model, or
anything after it, sees them; the response names the entity types removed (header X-Luodi-PII-Removed).

The access log never records bodies, so the redacted text is the only text that goes further than the request.
"""

from __future__ import annotations

from typing import Any

from luodi.config import on_off_or_file
from luodi.options.privacy import PII_REMOVED_HEADER
from luodi.privacy.config import PiiConfig, pii_config

HEADER = PII_REMOVED_HEADER
SETTING = "LUODI_GUARD_PII"


def guard_config(value: str) -> PiiConfig | None:
    """The guard's settings from LUODI_GUARD_PII: empty or 'off': none; 'on': the defaults; else a YAML / JSON file
    of PiiConfig fields. Errors name the setting (and the field)."""
    raw = on_off_or_file(value, SETTING, "PII settings")
    return None if raw is None else pii_config({} if raw is True else raw, where=SETTING)


def check_ready(cfg: PiiConfig) -> None:
    """Fail at start-up, not on the first request, when the names' NER app has no run."""
    if cfg.uses_names:
        from luodi.privacy.nlp_engine import load_ner

        load_ner(cfg.ner_app, cfg.ner_version)
    if cfg.operator == "encrypt":
        from luodi.privacy.pii import encryption_key

        encryption_key(cfg)


def _slots(req: Any) -> list[tuple[Any, Any, str]]:
    """(holder, key, text) for every text of a chat request's messages or a completion request's prompt."""
    out: list[tuple[Any, Any, str]] = []
    if hasattr(req, "messages"):
        for m in req.messages:
            if isinstance(m.content, str):
                out.append((m, "content", m.content))
            elif isinstance(m.content, list):
                for part in m.content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        out.append((part, "text", part["text"]))
    prompt = getattr(req, "prompt", None)
    if isinstance(prompt, str):
        out.append((req, "prompt", prompt))
    elif isinstance(prompt, list):
        out += [(prompt, i, p) for i, p in enumerate(prompt) if isinstance(p, str)]
    return out


def redact_request(req: Any, cfg: PiiConfig) -> tuple[Any, list[str]]:
    """A copy of the request with every message text (or the prompt) redacted, and the entity types removed."""
    from luodi.privacy.pii import redact

    req = req.model_copy(deep=True)
    slots = _slots(req)
    if not slots:
        return req, []
    done = redact([text for _, _, text in slots], cfg)
    for (holder, key, _), r in zip(slots, done, strict=True):
        if isinstance(holder, dict | list):
            holder[key] = r["text"]
        else:
            setattr(holder, key, r["text"])
    return req, sorted({t for r in done for t in r["removed"]})
