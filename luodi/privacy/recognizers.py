"""The pattern side of PII detection: Presidio's own predefined recognizers (regexes with checksums and context
words) for the entity types luodi uses, customised where Presidio's defaults miss common formats:

- cards: Presidio's CreditCardRecognizer (Luhn-checked) with more patterns: Mastercard's 2-series (2221-2720),
  19-digit Visa / Maestro / UnionPay numbers, 12-digit Maestro, 15-digit JCB; every match still passes Luhn;
- phones: Presidio's PhoneRecognizer (libphonenumber, valid numbers only) plus a PatternRecognizer for phone
  layouts written with separators (NANP "(415) 555-0134", "+1-415-555-0134x12", "001-...", E.164 "+44 20 ...",
  UK "0113 496 0123") whose area codes libphonenumber does not know (unallocated, fictional or new ranges);
- dates: Presidio's DateRecognizer (numeric layouts) plus dates with a written month ("12 March 1985", "March 12th,
  1985"), as dates of birth are often written;
- street addresses: a PatternRecognizer (Presidio ships none).
"""

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


CARD_PATTERNS = [
    *CreditCardRecognizer.PATTERNS,  # Presidio's: 13-17 digits starting 1, 3, 4, 5[0-5] or 6
    Pattern("card (Mastercard 2-series)", r"\b2[2-7]\d{2}[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b", 0.3),
    Pattern("card (18-19 digits)", r"\b[3-6]\d{3}(?:[- ]?\d{4}){3}[- ]?\d{2,3}\b", 0.3),
    Pattern("card (Maestro 12 digits)", r"\b(?:5[06-8]|6\d)\d{10}\b", 0.3),
    Pattern("card (JCB 15 digits)", r"\b(?:2131|1800)\d{11}\b", 0.3),
]
MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sept?(?:ember)?|"
    r"Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
DAY = r"(?:[1-9]|0[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?"
DATE_PATTERNS = [
    *DateRecognizer.PATTERNS,
    Pattern("date (day month year)", r"\b" + DAY + r"(?:\s+of)?\s+" + MONTH + r",?\s+\d{4}\b", 0.6),
    Pattern("date (month day, year)", r"\b" + MONTH + r"\s+" + DAY + r",?\s+\d{4}\b", 0.6),
]
DATE_CONTEXT = [*DateRecognizer.CONTEXT, "born", "birth", "dob", "birthday"]
EXTENSION = r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?"
PHONE_PATTERNS = [
    Pattern(
        "phone (NANP with separators)",
        r"(?<![\w+])(?:(?:\+1|001)[-. ]?)?(?:\(\d{3}\)\s?|\d{3}[-.])\d{3}[-.]\d{4}" + EXTENSION + r"\b",
        0.5,
    ),
    Pattern("phone (international)", r"(?<![\w+])\+\d{1,3}(?:\(0\))?[-. ]?\d{2,5}(?:[-. ]?\d{2,4}){1,3}\b", 0.5),
    Pattern("phone (UK national)", r"(?<![\w+])0\d{2,4} \d{3,4} ?\d{3,4}\b", 0.4),
    Pattern("phone (10 digits)", r"(?<![\w+])\d{10}\b", 0.1),  # only with a context word nearby
]
PHONE_CONTEXT = [*PhoneRecognizer.CONTEXT, "phone", "tel", "ring", "text", "reach", "contact", "fax"]


def phone_layout_recognizer() -> PatternRecognizer:
    return PatternRecognizer(
        supported_entity="PHONE_NUMBER", name="PhoneLayoutRecognizer", patterns=PHONE_PATTERNS, context=PHONE_CONTEXT
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
        phone_layout_recognizer(),
        CreditCardRecognizer(patterns=CARD_PATTERNS),
        IbanRecognizer(),
        IpRecognizer(),
        UrlRecognizer(),
        UsSsnRecognizer(),
        UsPassportRecognizer(),
        NhsRecognizer(),
        UkNinoRecognizer(),
        UkPassportRecognizer(),
        DateRecognizer(patterns=DATE_PATTERNS, context=DATE_CONTEXT),
        street_address_recognizer(),
    ]
