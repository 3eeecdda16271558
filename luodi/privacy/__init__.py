"""PII detection and redaction (Presidio, offline: names from luodi's own NER app). See docs/privacy.md."""

from luodi.privacy.config import ALL_ENTITIES, PiiConfig, pii_config
from luodi.privacy.pii import analyze, decrypt, redact, scan

__all__ = ["ALL_ENTITIES", "PiiConfig", "analyze", "decrypt", "pii_config", "redact", "scan"]
