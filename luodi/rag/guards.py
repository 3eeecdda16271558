"""A knowledge base's guards, from its stored settings. `pii` (guard.pii for a KB): documents are redacted before
they are chunked, embedded or stored, and questions before they are searched or sent to the LLM. `injection`:
retrieved passages that carry injected instructions are dropped or flagged before the LLM sees them. Both act
through luodi.privacy, imported only when a KB has the setting (Presidio takes seconds to import)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
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


VERDICTS = "injection_verdicts.json"  # beside the KB's index: per chunk text (sha256), the verdict taken at ingest


def _guard(config: dict[str, Any], name: str) -> Any:
    raw = config.get("injection")
    if not raw:
        return None
    from luodi.privacy.injection import injection_config, shared_guard

    cfg = injection_config(raw, where=f"knowledge base '{name}' injection")
    return None if cfg is None else shared_guard(cfg)


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_READ: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}  # path -> ((mtime, size), verdicts): read once


def _stored(folder: Path) -> dict[str, Any]:
    """The stored verdicts of the KB in `folder`, read again only when the file changed (shared: copy before
    changing it)."""
    from luodi.crypto import read_json

    path = folder / VERDICTS
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size)
    got = _READ.get(path)
    if got is None or got[0] != stamp:
        got = _READ[path] = (stamp, read_json(path))
    return got[1]


def screen_at_ingest(config: dict[str, Any], name: str, folder: Path, texts: list[str]) -> int:
    """With the KB's `injection` on: check new chunks as they are added and store each verdict (keyed by the chunk
    text's sha256, with the classifier's version), so answering need not run the classifier again; the number of
    chunks that look injected. `folder`: the KB's own (rag.kbs.kb_dir). The caller holds the KB's write lock."""
    guard = _guard(config, name)
    if guard is None or not texts:
        return 0
    from luodi.atomic import write_json

    verdicts = guard.check(texts)
    stored = dict(_stored(folder))
    model = guard.model_id()
    for t, v in zip(texts, verdicts, strict=True):
        stored[_key(t)] = {"model": model, "injected": v.injected, "checks": v.checks, "score": v.score}
    write_json(folder / VERDICTS, stored, indent=None)
    return sum(v.injected for v in verdicts)


def kb_screen(config: dict[str, Any], name: str, folder: Path) -> Screen | None:
    """The injection screen of knowledge base `name` from its config's `injection` setting, None when it has none.
    A passage whose verdict was stored at ingest by the same classifier and settings is not checked again;
    others (a KB made before ingest screening, another classifier version) are checked now."""
    guard = _guard(config, name)
    if guard is None:
        return None
    from luodi.privacy.injection import screen_passages

    live = screen_passages(guard)
    action = "drop" if guard.cfg.mode == "block" else "flag"

    def screen(texts: list[str]) -> list[dict[str, Any] | None]:
        stored, model = _stored(folder), guard.model_id()
        known = [stored.get(_key(t)) for t in texts]
        known = [k if k is not None and k.get("model") == model else None for k in known]
        todo = [i for i, k in enumerate(known) if k is None]
        fresh = iter(live([texts[i] for i in todo]) if todo else [])
        return [next(fresh) if k is None else ({"action": action, "checks": k["checks"], "score": k["score"]}
                                                if k["injected"] else None) for k in known]

    return screen
