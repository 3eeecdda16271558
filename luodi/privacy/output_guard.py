"""The output half of `guard.injection`: does a model reply leak a secret, the system prompt or PII?

Why these three: they are what a successful injection usually extracts (OWASP LLM02 / LLM07). Each check is a
pure function of the reply, so it runs in well under a millisecond for secrets and the system prompt; PII uses
luodi.privacy.pii with patterns only (`ner_app: None`: no NER model, no names) to stay fast.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from luodi.privacy.injection_config import InjectionConfig

SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    name: re.compile(rx)
    for name, rx in {
        "private_key": r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----",
        "openai_key": r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",
        "aws_access_key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        "github_token": r"\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}",
        "slack_token": r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
        "google_api_key": r"\bAIza[0-9A-Za-z_-]{35}\b",
        "stripe_key": r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}",
        "jwt": r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        "luodi_key": r"\bld-[A-Za-z0-9_-]{30,}",  # luodi.keys.KEY_PREFIX + token_urlsafe(32)
        "password_assignment": r"(?i)\b(?:password|passwd|api[_-]?key|secret[_-]?key|access[_-]?token)\s*[:=]\s*"
        r"['\"]?[^\s'\"]{8,}",
    }.items()
}
# the server's own secrets: a reply that contains one of these values verbatim leaks it
SERVER_SECRET_SETTINGS = ("LUODI_ADMIN_KEY", "LUODI_PII_KEY", "LUODI_ENCRYPTION_KEY", "OPENAI_API_KEY")
_WORD = re.compile(r"\w+")


def server_secrets() -> list[str]:
    """Values of the server's secret settings present in the environment (at least 8 characters)."""
    return [v for k in SERVER_SECRET_SETTINGS if len(v := os.environ.get(k, "")) >= 8]


def secret_hits(text: str, known: Iterable[str] = ()) -> list[str]:
    """Names of the secret patterns found in `text`, plus `server_key` when a known secret value appears."""
    hits = [name for name, rx in SECRET_PATTERNS.items() if rx.search(text)]
    if any(k and k in text for k in known):
        hits.append("server_key")
    return hits


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def prompt_matches(reply: str, system: str, n: int = 8) -> tuple[int, int]:
    """(how many of the system message's distinct word n-grams the reply contains, how many it has), lower-cased;
    a system message shorter than n words is one n-gram (all of it)."""
    sw = [w.lower() for w in _WORD.findall(system)]
    rw = [w.lower() for w in _WORD.findall(reply)]
    if not sw or not rw:
        return 0, max(len(sw), 1)
    n = min(n, len(sw))
    grams = _grams(sw, n)
    return len(grams & _grams(rw, n)), len(grams)


def prompt_overlap(reply: str, system: str, n: int = 8) -> float:
    """Share of the system message's word n-grams (lower-cased) that the reply contains; a system message
    shorter than n words counts only when the reply contains all of it."""
    hit, total = prompt_matches(reply, system, n)
    return hit / total


# a reply still being streamed: this many of the system message's 8-grams (>= 10 words copied in a row) already
# count as an echo, when the share would need more; otherwise the first half of a long system prompt would have
# gone out before its share reached system_prompt_overlap
PARTIAL_PROMPT_GRAMS = 3


def check_output(
    text: str, cfg: InjectionConfig, system: str | None = None, known: Iterable[str] | None = None,
    partial: bool = False,
) -> list[str]:
    """The output checks that fire on a reply: "secrets:<pattern>", "system_prompt", "pii:<ENTITY_TYPE>".
    `partial`: the reply so far of a stream (system_prompt fires on PARTIAL_PROMPT_GRAMS copied 8-grams too)."""
    fired: list[str] = []
    if not text:
        return fired
    if "secrets" in cfg.output_checks:
        fired += [f"secrets:{h}" for h in secret_hits(text, server_secrets() if known is None else known)]
    if "system_prompt" in cfg.output_checks and system and len(_WORD.findall(system)) >= 4:
        hit, total = prompt_matches(text, system)
        if hit / total >= cfg.system_prompt_overlap or (
            partial and hit >= min(cfg.system_prompt_overlap * total, PARTIAL_PROMPT_GRAMS)
        ):
            fired.append("system_prompt")
    if "pii" in cfg.output_checks and cfg.pii_entities:
        from luodi.privacy.pii import scan

        found = scan([text], {"ner_app": None, "entities": cfg.pii_entities})[0]
        fired += [f"pii:{t}" for t in sorted({f["entity_type"] for f in found})]
    return fired


WITHHELD = "[luodi guard: the reply was withheld because it failed the output checks: {checks}]"
