"""PII detection and redaction (luodi.privacy, on Presidio): pattern recognizers on real strings, every operator,
encrypt -> decrypt, config and input errors, `luodi pii` on a file and on stdin, and names through a small NER
app trained here on a CoNLL-2003 slice (skipped without the shared datasets)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("presidio_analyzer", reason="the privacy extra is not installed: pip install -e '.[privacy]'")

from typer.testing import CliRunner  # noqa: E402

from luodi.cli import app  # noqa: E402
from luodi.errors import ConfigError, LuodiError, NotFound  # noqa: E402
from luodi.privacy import decrypt, pii_config, redact, scan  # noqa: E402

PATTERNS = {"ner_app": None}  # patterns only: no trained NER app needed
KEY = "0123456789abcdef"
TEXT = (
    "Mail jane.doe@example.com or call (415) 555-0134. Card 4111 1111 1111 1111, "
    "IBAN GB82 WEST 1234 5698 7654 32, server 192.168.1.20. I live at 221B Baker Street."
)


def types(found: list[dict]) -> dict[str, str]:
    return {f["text"]: f["entity_type"] for f in found}


def test_patterns_found_on_real_strings():
    [found] = scan([TEXT], PATTERNS)
    assert types(found) == {
        "jane.doe@example.com": "EMAIL_ADDRESS",
        "(415) 555-0134": "PHONE_NUMBER",
        "4111 1111 1111 1111": "CREDIT_CARD",
        "GB82 WEST 1234 5698 7654 32": "IBAN_CODE",
        "192.168.1.20": "IP_ADDRESS",
        "221B Baker Street": "STREET_ADDRESS",
    }
    for f in found:
        assert TEXT[f["start"] : f["end"]] == f["text"] and 0.4 <= f["score"] <= 1.0


def test_national_ids_and_dates_of_birth():
    text = "SSN 219-09-9999, NINO AB 12 34 56 C, born on 12 March 1985 (DOB 1985-03-12), visit in March"
    [found] = scan([text], PATTERNS)
    assert types(found) == {
        "219-09-9999": "US_SSN",
        "AB 12 34 56 C": "UK_NINO",
        "12 March 1985": "DATE_TIME",
        "1985-03-12": "DATE_TIME",
    }


def test_checksums_reject_lookalikes():
    [found] = scan(["card 4111 1111 1111 1112 and IBAN GB82 WEST 1234 5698 7654 33"], PATTERNS)
    assert not {"CREDIT_CARD", "IBAN_CODE"} & {f["entity_type"] for f in found}  # Luhn / ISO 13616 fail


def test_entities_and_threshold_narrow_the_search():
    [found] = scan([TEXT], {**PATTERNS, "entities": ["EMAIL_ADDRESS"]})
    assert [f["entity_type"] for f in found] == ["EMAIL_ADDRESS"]
    [found] = scan([TEXT], {**PATTERNS, "score_threshold": 0.9})
    assert {f["entity_type"] for f in found} == {"EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE"}
    assert scan([], PATTERNS) == [] and scan(["nothing to see"], PATTERNS) == [[]]


def test_operators():
    [r] = redact([TEXT], PATTERNS)
    assert r["text"].startswith("Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>.")
    assert "4111" not in r["text"] and "GB82" not in r["text"] and "Baker" not in r["text"]
    assert r["removed"] == sorted(
        ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "STREET_ADDRESS"]
    )
    for item in r["items"]:
        assert r["text"][item["start"] : item["end"]] == f"<{item['entity_type']}>"
    [r] = redact(["mail jane.doe@example.com now"], {**PATTERNS, "operator": "redact"})
    assert r["text"] == "mail  now"
    [r] = redact(["mail jane.doe@example.com now"], {**PATTERNS, "operator": "mask", "mask_char": "#"})
    assert r["text"] == "mail " + "#" * 20 + " now"
    [r] = redact(["card 4111111111111111"], {**PATTERNS, "operator": "mask", "mask_chars": 12})
    assert r["text"] == "card ************1111"
    salted = {**PATTERNS, "operator": "hash", "salt": "a fixed salt of 16+ bytes"}
    a, b = redact(["mail jane.doe@example.com", "to jane.doe@example.com"], salted)
    assert a["text"][5:] == b["text"][3:] and len(a["text"][5:]) == 64  # same value, same pseudonym
    a, b = redact(["mail jane.doe@example.com", "mail jane.doe@example.com"], {**PATTERNS, "operator": "hash"})
    assert a["text"] != b["text"]  # a random salt per value: not linkable


def test_encrypt_decrypt_round_trip(monkeypatch):
    [r] = redact([TEXT], {**PATTERNS, "operator": "encrypt", "key": KEY})
    assert "jane.doe" not in r["text"] and len(r["items"]) == 6
    assert decrypt(r["text"], r["items"], KEY) == TEXT
    monkeypatch.setenv("LUODI_PII_KEY", KEY)  # the key from the environment
    [r] = redact(["mail jane.doe@example.com"], {**PATTERNS, "operator": "encrypt"})
    assert decrypt(r["text"], r["items"]) == "mail jane.doe@example.com"
    with pytest.raises(LuodiError, match="could not decrypt") as e:
        decrypt(r["text"], r["items"], "fedcba9876543210")
    assert e.value.param == "key"


def test_bad_config_names_the_field(monkeypatch):
    monkeypatch.delenv("LUODI_PII_KEY", raising=False)
    cases = [
        ({"entities": ["EMAIL", "PERSON"]}, "pii.entities"),
        ({"entities": []}, "pii.entities"),
        ({"operator": "shred"}, "pii.operator"),
        ({"score_threshold": 2}, "pii.score_threshold"),
        ({"salt": "short"}, "pii.salt"),
        ({"key": "too-short"}, "pii.key"),
        ({"colour": "red"}, "pii.colour"),
    ]
    for data, field in cases:
        with pytest.raises(ConfigError) as e:
            pii_config(data)
        assert e.value.param == field and e.value.message.startswith(field)
    with pytest.raises(ConfigError, match="LUODI_PII_KEY") as e:
        redact(["mail jane.doe@example.com"], {**PATTERNS, "operator": "encrypt"})
    assert e.value.param == "key"
    with pytest.raises(LuodiError, match="texts must be a list of strings"):
        scan("not a list", PATTERNS)
    with pytest.raises(LuodiError, match="items"):
        decrypt("abc", [{"start": 0}], KEY)
    with pytest.raises(LuodiError, match="outside the text"):
        decrypt("abc", [{"entity_type": "X", "start": 0, "end": 9}], KEY)


def test_long_texts_reach_the_ner_in_sentence_pieces():
    import spacy

    from luodi.privacy.nlp_engine import windows

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    doc = nlp(" ".join(["The weather was fine today."] * 10) + " " + " ".join(["word"] * 25))
    pieces = windows(doc, 12)
    assert [doc.text[a:b] for a, b in pieces[:2]] == ["The weather was fine today. The weather was fine today."] * 2
    assert all(len(nlp.make_doc(doc.text[a:b])) <= 12 for a, b in pieces)  # a long sentence is cut too
    assert " ".join(doc.text[a:b] for a, b in pieces) == doc.text  # every token in exactly one piece
    assert windows(nlp(""), 12) == [(0, 0)] and windows(nlp("short one"), 12) == [(0, 9)]


def test_names_without_a_trained_ner_app_say_how_to_train():
    with pytest.raises(NotFound, match=r"luodi train examples/entity-extraction.yaml") as e:
        scan(["Peter lives in Paris"], {"ner_app": "no-such-ner-app"})
    assert e.value.param == "ner_app"


def test_cli_on_a_file_and_on_stdin(tmp_path, monkeypatch):
    src = tmp_path / "notes.txt"
    src.write_text("mail jane.doe@example.com\nnothing here\nserver 192.168.1.20\n")
    r = CliRunner().invoke(app, ["pii", "scan", str(src), "--no-names"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["line"], x["entities"][0]["entity_type"]) for x in rows] == [(1, "EMAIL_ADDRESS"), (3, "IP_ADDRESS")]
    r = CliRunner().invoke(app, ["pii", "redact", "-", "--no-names"], input=src.read_text())
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["mail <EMAIL_ADDRESS>", "nothing here", "server <IP_ADDRESS>"]
    assert "removed: EMAIL_ADDRESS 1, IP_ADDRESS 1" in r.stderr
    monkeypatch.setenv("LUODI_PII_KEY", KEY)
    r = CliRunner().invoke(app, ["pii", "redact", str(src), "--no-names", "--operator", "encrypt", "--json"])
    assert r.exit_code == 0, r.output
    enc = tmp_path / "enc.jsonl"
    enc.write_text(r.stdout)
    r = CliRunner().invoke(app, ["pii", "decrypt", str(enc)])
    assert r.exit_code == 0, r.output
    assert r.stdout == src.read_text()


def test_cli_bad_input(tmp_path):
    runner = CliRunner()

    def err(r) -> str:  # rich wraps long lines
        return " ".join(r.stderr.split())

    r = runner.invoke(app, ["pii", "scan", str(tmp_path / "missing.txt"), "--no-names"])
    assert r.exit_code == 2 and "FILE" in err(r) and "not a file" in err(r)
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00bad")
    r = runner.invoke(app, ["pii", "scan", str(binary), "--no-names"])
    assert r.exit_code == 2 and "not UTF-8" in err(r)
    r = runner.invoke(app, ["pii", "redact", "-", "--no-names", "--operator", "shred"], input="x\n")
    assert r.exit_code == 2 and "pii.operator" in err(r)
    r = runner.invoke(app, ["pii", "scan", "-", "--entities", "EMAIL,NOPE", "--no-names"], input="x\n")
    assert r.exit_code == 2 and "pii.entities" in err(r)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    r = runner.invoke(app, ["pii", "decrypt", str(bad)])
    assert r.exit_code == 2 and "line 1" in err(r)


def test_names_from_a_trained_ner_app(datasets_dir, tmp_path, luodi_home):
    """A small entity-extraction run (400 CoNLL-2003 sentences) is Presidio's NLP engine: its PER / ORG / LOC come
    back as PERSON / ORGANIZATION / LOCATION, and nothing about the scanned texts lands in the feature cache."""
    from luodi import api
    from luodi.data.text import read_conll
    from luodi.settings import get_settings

    sents = read_conll(datasets_dir / "conll2003/eng.train", to_bio=False)[:400]
    conll = tmp_path / "slice.conll"
    lines = ["\n".join(f"{w} X X {t}" for w, t in zip(s["tokens"], s["tags"], strict=True)) for s in sents]
    conll.write_text("\n\n".join(lines) + "\n")
    app_file = tmp_path / "pii-ner.yaml"
    app_file.write_text(
        "name: pii-ner\ntask: token-classification\n"
        f"data: {{path: {conll}, format: conll}}\n"
        "model: {options: {hidden: 64}}\ntrain: {epochs: 3, lr: 0.003, batch_size: 16}\n"
    )
    api.train(str(app_file), progress=False)
    texts = [" ".join(s["tokens"]) for s in sents[:40]]
    cache = get_settings().cache_dir
    before = set(cache.rglob("*")) if cache.exists() else set()
    found = scan(texts + ["write to jane.doe@example.com"], {"ner_app": "pii-ner"})
    assert (set(cache.rglob("*")) if cache.exists() else set()) == before  # texts' features were not cached
    names = [f for fs in found for f in fs if f["entity_type"] in ("PERSON", "ORGANIZATION", "LOCATION")]
    assert len(names) >= 10  # training sentences: a small model finds most of its own names
    for text, fs in zip(texts, found, strict=False):
        for f in fs:
            assert text[f["start"] : f["end"]] == f["text"]
    assert found[-1][0]["entity_type"] == "EMAIL_ADDRESS"
    # past the encoder's 512 sub-words: the NER reads long texts in pieces, offsets stay the long text's
    filler = " ".join(["The weather was fine ."] * 150)
    long = f"{filler} {texts[0]}"
    [late] = scan([long], {"ner_app": "pii-ner"})
    assert found[0] and [f for f in late if f["start"] > len(filler)]  # names found past the first 512 sub-words
    assert all(long[f["start"] : f["end"]] == f["text"] for f in late)
    [r] = redact([texts[0]], {"ner_app": "pii-ner"})
    assert set(r["removed"]) <= {"PERSON", "ORGANIZATION", "LOCATION", "DATE_TIME", "PHONE_NUMBER"}
