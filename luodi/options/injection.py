"""`InjectionConfig`: the settings of `guard.injection` (server: LUODI_GUARD_INJECTION; a knowledge base's and an
agent's `injection` setting). One model for all three, so a YAML file written for one works for the others. It lives
here, beside the other typed options, so a knowledge base (luodi.rag) can validate and store it while the detector
(luodi.privacy.injection) stays above the apps it loads. Imports pydantic only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from luodi.options.strict import Strict

INPUT_CHECKS = ("heuristics", "classifier")
OUTPUT_CHECKS = ("secrets", "system_prompt", "pii")


class InjectionConfig(Strict):
    """What the injection guard checks and what it does when a check fires."""

    mode: Literal["block", "flag"] = Field(
        "block",
        description="block: refuse the request (HTTP 400 guard_injection), drop the passage or replace the tool "
        "output with a notice; flag: let it through and say so (X-Luodi-Guard header, the answer's `guard` list)",
    )
    checks: list[Literal["heuristics", "classifier"]] = Field(
        default_factory=lambda: list(INPUT_CHECKS),
        description="input checks: heuristics (known attack phrasings and hidden-instruction markup) and classifier "
        "(the trained `app`); an empty list turns input checks off",
    )
    app: str = Field(
        "prompt-injection",
        description="trained text-classification app with an 'injection' label (`luodi train "
        "examples/prompt-injection.yaml`); used when checks has classifier",
    )
    version: str | None = Field(None, description="run version of `app` (default: the one it serves)")
    threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="classifier: lowest 'injection' probability that counts as an injection"
    )
    window_words: int = Field(
        60, ge=8, le=400, description="classifier: longer texts are scored in windows of whole sentences of about "
        "this many words (the highest window counts), so an instruction hidden in a long passage is not cut off"
    )
    output_checks: list[Literal["secrets", "system_prompt", "pii"]] = Field(
        default_factory=lambda: list(OUTPUT_CHECKS),
        description="checks on the model's reply (server responses, streamed ones as they grow): secrets "
        "(API-key-like strings, private keys, this server's keys), system_prompt (the reply repeats the system "
        "message), pii (pattern entities: emails, cards, IBANs, ...); an empty list turns output checks off",
    )
    system_prompt_overlap: float = Field(
        0.5, gt=0.0, le=1.0, description="system_prompt: share of the system message's word 8-grams found in the "
        "reply at or above which the reply counts as echoing it"
    )
    stream_hold_chars: int = Field(
        128, ge=0, le=4096, description="streamed replies: characters held back behind the checked text, so a "
        "secret, a PII value or a copied stretch of the system prompt is caught before any of it is sent (the "
        "stream runs this far behind the model); 0 sends each piece once checked, so a leak's first characters can "
        "go out"
    )
    pii_entities: list[str] = Field(
        default_factory=lambda: ["EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "UK_NINO", "PHONE_NUMBER"],
        description="pii: Presidio pattern entity types that count as leaked PII in a reply (names are not "
        "checked: patterns only, to stay fast)",
    )

    @property
    def uses_classifier(self) -> bool:
        return "classifier" in self.checks
