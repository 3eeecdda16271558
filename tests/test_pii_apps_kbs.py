"""guard.pii in an app and in a knowledge base: texts are redacted before the model, the index or the LLM sees
them, and the HTTP responses name the entity types removed (patterns only here: no NER run needed)."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("presidio_analyzer", reason="the privacy extra is not installed: pip install -e '.[privacy]'")

from luodi import api, rag  # noqa: E402
from luodi.config import AppConfig  # noqa: E402
from luodi.errors import BadRequest  # noqa: E402

PATTERNS = {"ner_app": None}  # email, phone, card, IBAN, IP, ...: no trained NER app needed
CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def guarded_app(datasets_dir, tmp_path_factory):
    from conftest import banking_slice_app

    folder = tmp_path_factory.mktemp("pii-app")
    return banking_slice_app(datasets_dir, folder, "pii-guarded-intents", {"features": ["tfidf"]},
                             guard={"pii": PATTERNS})


def test_app_model_sees_only_redacted_text(guarded_app):
    raw = f"my card {CARD} was charged twice, write to jane.doe@example.com"
    redacted = "my card <CREDIT_CARD> was charged twice, write to <EMAIL_ADDRESS>"
    pred = api.load_predictor("pii-guarded-intents")
    clean, removed = pred.redact([{"text": raw}])
    assert clean == [{"text": redacted}] and removed == ["CREDIT_CARD", "EMAIL_ADDRESS"]
    # the same scores for the raw text and its redaction: the model never read the card number or the address
    assert api.predict("pii-guarded-intents", {"text": raw}) == api.predict("pii-guarded-intents", {"text": redacted})
    unguarded = pred.predict_redacted([{"text": raw}])[0]
    assert unguarded != api.predict("pii-guarded-intents", {"text": raw})[0]  # what the guard changed


def test_app_route_names_the_removed_types(guarded_app, live_server):
    with httpx.Client(base_url=live_server.url, headers=live_server.headers, timeout=120) as c:
        r = c.post("/v1/apps/pii-guarded-intents/predict", json={"text": f"card {CARD} declined"})
        assert r.status_code == 200, r.text
        assert r.headers["X-Luodi-PII-Removed"] == "CREDIT_CARD"
        r = c.post("/v1/apps/pii-guarded-intents/predict", json={"inputs": [{"text": "card declined"}]})
        assert r.headers["X-Luodi-PII-Removed"] == "none"
        files = [("files", ("t.txt", b"mail jane.doe@example.com\ncard declined\n", "text/plain"))]
        r = c.post("/v1/apps/pii-guarded-intents/predict/files", files=files)
        assert r.status_code == 200, r.text
        assert r.headers["X-Luodi-PII-Removed"] == "EMAIL_ADDRESS" and len(r.json()["outputs"]) == 2


def test_guard_only_where_there_is_free_text():
    base = {"name": "t", "task": "tabular", "guard": {"pii": PATTERNS}}
    with pytest.raises(ValueError, match="guard.pii redacts free-text inputs; a tabular app has none"):
        AppConfig.model_validate(base)
    with pytest.raises(ValueError, match="guard.pii.operator"):
        AppConfig.model_validate({**base, "task": "text-classification", "guard": {"pii": {"operator": "x"}}})


def test_kb_stores_and_searches_redacted_text(luodi_home):
    rag.create_kb("pii-kb", pii=PATTERNS)
    doc = (b"# Refunds\n\nRefunds go to the card you paid with. Our agent Sam answers at refunds@shop.com "
           b"or +1 415 555 0134 on weekdays.\n")
    report = rag.add_bytes("pii-kb", [("refunds.md", doc)])
    assert report.added == ["refunds.md"]
    assert report.pii_removed == {"refunds.md": ["EMAIL_ADDRESS", "PHONE_NUMBER"]}
    res = rag.search("pii-kb", "refund to card 4111 1111 1111 1111?", k=1)
    assert res.query == "refund to card <CREDIT_CARD>?" and res.pii_removed == ["CREDIT_CARD"]
    stored = res.hits[0].text
    assert "<EMAIL_ADDRESS>" in stored and "<PHONE_NUMBER>" in stored
    assert "refunds@shop.com" not in stored and "555" not in stored
    assert rag.get_kb("pii-kb")["config"]["pii"]["ner_app"] is None


def test_kb_pii_settings_errors(luodi_home):
    with pytest.raises(BadRequest) as e:
        rag.create_kb("pii-bad", pii={"operator": "shred"})
    assert e.value.param == "pii.operator"
    with pytest.raises(BadRequest, match="stored in the database") as e:
        rag.create_kb("pii-bad", pii={"operator": "encrypt", "key": "0123456789abcdef"})
    assert e.value.param == "pii.key"
    with pytest.raises(BadRequest, match="unknown entity types"):
        rag.create_kb("pii-bad", pii={"entities": ["SHOE_SIZE"]})


def test_kb_routes_name_the_removed_types(live_server):
    with httpx.Client(base_url=live_server.url, headers=live_server.headers, timeout=120) as c:
        r = c.post("/v1/kb", json={"name": "pii-http-kb", "pii": PATTERNS})
        assert r.status_code == 201, r.text
        r = c.post("/v1/kb", json={"name": "pii-http-bad", "pii": {"operator": "shred"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "pii.operator"
        files = [("files", ("hours.md", b"# Hours\n\nCall 415-555-0134 between 9 and 5.\n", "text/markdown"))]
        r = c.post("/v1/kb/pii-http-kb/documents", files=files)
        assert r.status_code == 200 and r.json()["pii_removed"] == {"hours.md": ["PHONE_NUMBER"]}
        r = c.post("/v1/kb/pii-http-kb/search", json={"query": "hours for jane.doe@example.com", "k": 1})
        assert r.headers["X-Luodi-PII-Removed"] == "EMAIL_ADDRESS"
        assert "415-555-0134" not in r.json()["data"][0]["text"]
