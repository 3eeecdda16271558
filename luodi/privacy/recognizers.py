"""The pattern side of PII detection: Presidio's own predefined recognizers (regexes with checksums and context
words) for the entity types luodi uses, plus one Presidio PatternRecognizer for street addresses, which Presidio
does not ship."""

from __future__ import annotations

import tldextract.tldextract
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    DateRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    NhsRecognizer,
    PhoneRecognizer,
    UkNinoRecognizer,
    UkPassportRecognizer,
    UrlRecognizer,
    UsPassportRecognizer,
    UsSsnRecognizer,
)

# The email recognizer checks top-level domains with tldextract, whose default extractor downloads the Public
# Suffix List on first use; luodi runs offline, so it uses the snapshot tldextract ships.
tldextract.tldextract.TLD_EXTRACTOR = tldextract.tldextract.TLDExtract(suffix_list_urls=(), fallback_to_snapshot=True)

STREET_WORDS = (
    "Street|Avenue|Road|Boulevard|Lane|Drive|Court|Way|Place|Terrace|Square|Parkway|Highway|Circle|Crescent|"
    "Close|Row|Alley|Trail|Walk|Plaza|Loop|Crossing|Mews"
)
STREET_ABBREVIATIONS = "St|Ave|Rd|Blvd|Ln|Dr|Ct|Pl|Sq|Pkwy|Hwy|Cir"
# "221B Baker Street", "1600 Pennsylvania Avenue NW", "12 Oak St., Apt 4": English-speaking formats only.
STREET_RE = (
    r"\b\d{1,6}[A-Za-z]?(?:\s+[NSEW]\.?)?(?:\s+[A-Z][A-Za-z'\-]+){1,4}\s+"
    r"(?:(?:" + STREET_WORDS + r")\b|(?:" + STREET_ABBREVIATIONS + r")\b\.?)"
    r"(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?(?:,?\s+(?:Apt\.?|Suite|Unit|#)\s*[A-Za-z0-9\-]+)?"
)


def street_address_recognizer() -> PatternRecognizer:
    return PatternRecognizer(
        supported_entity="STREET_ADDRESS",
        name="StreetAddressRecognizer",
        patterns=[Pattern("street address", STREET_RE, 0.5)],
        context=["address", "live", "lives", "located", "street", "ship", "deliver", "mail"],
    )


def pattern_recognizers() -> list[EntityRecognizer]:
    """One recognizer per PATTERN_ENTITIES type (config.py), English."""
    return [
        EmailRecognizer(),
        PhoneRecognizer(),
        CreditCardRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
        UrlRecognizer(),
        UsSsnRecognizer(),
        UsPassportRecognizer(),
        NhsRecognizer(),
        UkNinoRecognizer(),
        UkPassportRecognizer(),
        DateRecognizer(),
        street_address_recognizer(),
    ]
