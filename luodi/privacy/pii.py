"""PII detection and redaction: one implementation behind `luodi pii`, the Python API and `guard.pii`.

Detection is Presidio's AnalyzerEngine with luodi's NLP engine (nlp_engine.py: names from luodi's own NER app,
offline) and Presidio's pattern recognizers (recognizers.py). Redaction is Presidio's AnonymizerEngine with one
operator (replace, redact, mask, hash, encrypt); `decrypt` reverses encrypt with the same key.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_anonymizer import AnonymizerEngine, DeanonymizeEngine, OperatorConfig, OperatorResult
from presidio_anonymizer.entities import InvalidParamError

from luodi.errors import BadRequest, ConfigError
from luodi.privacy.config import NAME_ENTITIES, PiiConfig, pii_config
from luodi.privacy.nlp_engine import LuodiNlpEngine, load_ner
from luodi.privacy.recognizers import pattern_recognizers

KEY_ENV = "LUODI_PII_KEY"
_engines: dict[tuple[str | None, str | None], BatchAnalyzerEngine] = {}
_lock = threading.Lock()
_analyzing = threading.Lock()


def analyzer(cfg: PiiConfig) -> BatchAnalyzerEngine:
    """The Presidio analyzer for cfg's NER app (or patterns only), built once per process."""
    app = cfg.ner_app if cfg.uses_names else None
    key = (app, cfg.ner_version if app else None)
    with _lock:
        if key in _engines:
            return _engines[key]
    ner = load_ner(app, cfg.ner_version) if app else None
    engine = LuodiNlpEngine(ner)
    engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    for r in pattern_recognizers():
        registry.add_recognizer(r)
    if ner is not None:
        registry.add_nlp_recognizer(nlp_engine=engine)
    batch = BatchAnalyzerEngine(AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"]))
    with _lock:
        _engines.setdefault(key, batch)
        return _engines[key]


def resolve_overlaps(results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Non-overlapping findings: the higher score wins an overlap, then the longer span; sorted by position."""
    kept: list[RecognizerResult] = []
    for r in sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start)):
        if all(r.end <= k.start or r.start >= k.end for k in kept):
            kept.append(r)
    return sorted(kept, key=lambda r: r.start)


def _texts(texts: list[str]) -> list[str]:
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest("texts must be a list of strings", param="texts")
    return texts


def analyze(texts: list[str], cfg: PiiConfig | dict | None = None) -> list[list[RecognizerResult]]:
    """Presidio's findings per text (overlaps resolved, score_threshold applied)."""
    cfg = pii_config(cfg)
    texts = _texts(texts)
    if not texts:
        return []
    engine = analyzer(cfg)
    # without a NER app nothing can find names: asking Presidio for them only logs a warning per call
    entities = cfg.entities if cfg.uses_names else [e for e in cfg.entities if e not in NAME_ENTITIES]
    with _analyzing:  # one analysis at a time per process: spaCy pipelines are not thread-safe (the encoder
        # under the NER is locked anyway), and server threads share the analyzer
        found = engine.analyze_iterator(
            texts, language="en", batch_size=64, entities=entities, score_threshold=cfg.score_threshold
        )
    return [resolve_overlaps(list(r)) for r in found]


def scan(texts: list[str], cfg: PiiConfig | dict | None = None) -> list[list[dict[str, Any]]]:
    """Per text: the PII found, each {entity_type, start, end, score, text}."""
    out = []
    for text, results in zip(texts, analyze(texts, cfg), strict=True):
        out.append(
            [
                {
                    "entity_type": r.entity_type,
                    "start": r.start,
                    "end": r.end,
                    "score": round(float(r.score), 4),
                    "text": text[r.start : r.end],
                }
                for r in results
            ]
        )
    return out


def encryption_key(cfg: PiiConfig) -> str:
    """cfg.key, else $LUODI_PII_KEY; an error naming `key` when neither is a 16/24/32-byte AES key."""
    key = cfg.key.get_secret_value() if cfg.key else os.environ.get(KEY_ENV, "")
    if not key:
        raise ConfigError(f"encrypt needs a key: set pii.key or {KEY_ENV} (16, 24 or 32 bytes)", param="key")
    if len(key.encode()) not in (16, 24, 32):
        raise ConfigError(f"key: an AES key must be 16, 24 or 32 bytes, not {len(key.encode())}", param="key")
    return key


def operator_config(cfg: PiiConfig) -> OperatorConfig:
    if cfg.operator == "mask":
        n = cfg.mask_chars or 10**9  # Presidio masks min(n, len(value)) characters
        params = {"masking_char": cfg.mask_char, "chars_to_mask": n, "from_end": cfg.mask_from_end}
        return OperatorConfig("mask", params)
    if cfg.operator == "hash":
        params: dict[str, Any] = {"hash_type": cfg.hash_type}
        if cfg.salt is not None:
            params["salt"] = cfg.salt.get_secret_value()
        return OperatorConfig("hash", params)
    if cfg.operator == "encrypt":
        return OperatorConfig("encrypt", {"key": encryption_key(cfg)})
    return OperatorConfig(cfg.operator)  # replace: <ENTITY_TYPE>; redact: removed


def redact(texts: list[str], cfg: PiiConfig | dict | None = None) -> list[dict[str, Any]]:
    """Per text: {text: redacted, items: [{entity_type, start, end, operator}] (positions in the redacted text),
    removed: the entity types removed}."""
    cfg = pii_config(cfg)
    op = {"DEFAULT": operator_config(cfg)}  # a bad key fails before any text is analysed
    engine = AnonymizerEngine()
    out = []
    for text, results in zip(texts, analyze(texts, cfg), strict=True):
        res = engine.anonymize(text=text, analyzer_results=results, operators=op)
        items = sorted(
            ({"entity_type": i.entity_type, "start": i.start, "end": i.end, "operator": i.operator} for i in res.items),
            key=lambda i: i["start"],
        )
        out.append({"text": res.text, "items": items, "removed": sorted({i["entity_type"] for i in items})})
    return out


def decrypt(text: str, items: list[dict[str, Any]], key: str | None = None) -> str:
    """Reverse `encrypt`: `items` are redact's items (entity_type, start, end) for the encrypted spans."""
    cfg = pii_config({"key": key} if key else {}, where="decrypt")
    if not isinstance(text, str):
        raise BadRequest("text must be a string", param="text")
    try:
        entities = [OperatorResult(int(i["start"]), int(i["end"]), str(i["entity_type"])) for i in items]
    except (KeyError, TypeError, ValueError):
        raise BadRequest("items: each needs entity_type, start and end (redact's output)", param="items") from None
    if any(not 0 <= e.start <= e.end <= len(text) for e in entities):
        raise BadRequest("items: a start/end lies outside the text", param="items")
    try:
        res = DeanonymizeEngine().deanonymize(
            text=text, entities=entities, operators={"DEFAULT": OperatorConfig("decrypt", {"key": encryption_key(cfg)})}
        )
    except (InvalidParamError, ValueError) as e:
        raise BadRequest(f"could not decrypt (wrong key or items?): {e}", param="key") from None
    return res.text
