"""A knowledge base's guards, from its stored settings. `pii` (guard.pii for a KB): documents are redacted before
they are chunked, embedded or stored, and questions before they are searched or sent to the LLM. `injection`:
retrieved passages that carry injected instructions are dropped or flagged before the LLM sees them. Both act
through luodi.privacy, imported only when a KB has the setting (Presidio takes seconds to import)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from luodi.errors import BadRequest
from luodi.options.privacy import PiiConfig

SECRETS = ("key", "salt")  # never stored in the database with the KB's settings


def pii_setting(value: bool | dict[str, Any] | None) -> dict[str, Any] | None:
    """The `pii` value stored in a KB's config: None (off), or PiiConfig fields (true: the defaults). Errors name
    `pii.<field>`; secrets are refused, since the settings are stored in the database in the clear."""
    if value is None or value is False:
        return None
    raw = {} if value is True else value
    if not isinstance(raw, dict):
        raise BadRequest("pii: true, false or a mapping of PII settings (see docs/privacy.md)", param="pii")
    secret = [k for k in SECRETS if raw.get(k) is not None]
    if secret:
        raise BadRequest(
            f"pii.{secret[0]}: a knowledge base's settings are stored in the database; leave it out "
            "(operator encrypt reads LUODI_PII_KEY; hash then uses a random salt per value)",
            param=f"pii.{secret[0]}",
        )
    try:
        cfg = PiiConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(["pii", *(str(p) for p in err["loc"])])
        raise BadRequest(f"{where}: {err['msg']}", param=where) from None
    return cfg.model_dump(mode="json", exclude=set(SECRETS))


def kb_pii(config: dict[str, Any], fallback: PiiConfig | None = None) -> PiiConfig | None:
    """The PII settings a KB applies: its own, else `fallback` (the server's guard, for questions)."""
    raw = config.get("pii")
    return PiiConfig.model_validate(raw) if raw else fallback


def redact_text(text: str, pii: PiiConfig | None) -> tuple[str, list[str]]:
    """`text` as the KB may keep or pass on, and the entity types removed."""
    if pii is None:
        return text, []
    from luodi.privacy import redact

    done = redact([text], pii)[0]
    return done["text"], done["removed"]


Screen = Callable[[list[str]], list[dict[str, Any] | None]]  # per passage: None (clean) or {action, checks, score}


def kb_screen(config: dict[str, Any], name: str) -> Screen | None:
    """The injection screen of knowledge base `name` from its config's `injection` setting, None when it has none."""
    raw = config.get("injection")
    if not raw:
        return None
    from luodi.privacy.injection import injection_config, screen_passages, shared_guard

    cfg = injection_config(raw, where=f"knowledge base '{name}' injection")
    return None if cfg is None else screen_passages(shared_guard(cfg))
