"""`PiiConfig`: what PII detection looks for and how redaction replaces it, and `GuardConfig`: an app's `guard:`
block. They live here, beside the other typed options, so an app file can hold `guard.pii` (luodi.config) while the
Presidio side (luodi.privacy) stays above the apps that it loads. Imports pydantic only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from luodi.options.strict import Strict

# the response header that names the entity types a guard.pii removed (chat, completion and app routes)
PII_REMOVED_HEADER = "X-Luodi-PII-Removed"

# Presidio entity types luodi detects: pattern recognizers (with checksums where the format has one) plus the
# names that luodi's own NER app finds (PERSON, ORGANIZATION, LOCATION).
PATTERN_ENTITIES = [
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",  # Luhn checksum
    "IBAN_CODE",  # ISO 13616 checksum
    "IP_ADDRESS",
    "URL",
    "US_SSN",
    "US_PASSPORT",
    "UK_NHS",  # checksum
    "UK_NINO",
    "UK_PASSPORT",
    "DATE_TIME",  # dates, dates of birth among them
    "STREET_ADDRESS",  # luodi's pattern: number, street name, street type (English-speaking formats)
]
NAME_ENTITIES = ["PERSON", "ORGANIZATION", "LOCATION"]
ALL_ENTITIES = PATTERN_ENTITIES + NAME_ENTITIES

Operator = Literal["replace", "redact", "mask", "hash", "encrypt"]


class PiiConfig(Strict):
    """`guard.pii` / `luodi pii`: detection (Presidio analyzer) and its operator (Presidio anonymizer)."""

    entities: list[str] = Field(
        default_factory=lambda: list(ALL_ENTITIES),
        description=f"entity types to find, any of: {', '.join(ALL_ENTITIES)}",
    )
    ner_app: str | None = Field(
        "entity-extraction",
        description="trained luodi token-classification app that finds PERSON / ORGANIZATION / LOCATION "
        "(its PER / ORG / LOC labels); null: patterns only, no names",
    )
    ner_version: str | None = Field(None, description="run version of ner_app (default: the one it serves)")
    score_threshold: float = Field(
        0.4, ge=0.0, le=1.0, description="lowest detection score kept (Presidio's scores, after context words)"
    )
    operator: Operator = Field(
        "replace",
        description="replace: <ENTITY_TYPE>; redact: removed; mask: characters masked; hash: salted SHA digest; "
        "encrypt: AES with `key`, reversible with `luodi pii decrypt`",
    )
    mask_char: str = Field("*", min_length=1, max_length=1, description="mask: the masking character")
    mask_chars: int | None = Field(None, ge=1, description="mask: how many characters (default: all)")
    mask_from_end: bool = Field(False, description="mask: mask the last characters instead of the first")
    hash_type: Literal["sha256", "sha512"] = Field("sha256", description="hash: the digest")
    salt: SecretStr | None = Field(
        None,
        description="hash: a fixed salt (>= 16 characters) so the same value always hashes alike (linkable "
        "pseudonyms); unset: a random salt per value",
    )
    key: SecretStr | None = Field(
        None, description="encrypt: AES key of 16, 24 or 32 bytes (default: the LUODI_PII_KEY environment variable)"
    )

    @field_validator("entities")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [e for e in v if e not in ALL_ENTITIES]
        if unknown:
            raise ValueError(f"unknown entity types {unknown}; known: {', '.join(ALL_ENTITIES)}")
        if not v:
            raise ValueError("name at least one entity type")
        return list(dict.fromkeys(v))

    @field_validator("salt")
    @classmethod
    def _salt(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().encode()) < 16:
            raise ValueError("a salt must be at least 16 bytes")
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().encode()) not in (16, 24, 32):
            raise ValueError("an AES key must be 16, 24 or 32 bytes long")
        return v

    @property
    def uses_names(self) -> bool:
        return self.ner_app is not None and any(e in NAME_ENTITIES for e in self.entities)


class GuardConfig(Strict):
    """An app's `guard:` block: what its prediction routes do to inputs before anything else sees them."""

    pii: PiiConfig | None = Field(
        None,
        description="redact PII in the app's free-text inputs (text, prompt) before prediction, logging or "
        "storage; the HTTP response names the entity types removed (header X-Luodi-PII-Removed)",
    )
