"""LUODI_GUARD_PII: chat and completion requests are redacted before the model sees them; the response names the
removed entity types. Unit tests on typed requests, setting errors, and a live server with the bundled chat model."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("presidio_analyzer", reason="the privacy extra is not installed: pip install -e '.[privacy]'")

from luodi.errors import ConfigError, NotFound  # noqa: E402
from luodi.llm.openai_types import ChatCompletionRequest  # noqa: E402
from luodi.privacy.guard import HEADER, check_ready, guard_config, redact_request  # noqa: E402
from luodi.serve.openai_schemas import CompletionBody  # noqa: E402


@pytest.fixture
def patterns_file(tmp_path):
    f = tmp_path / "guard.yaml"
    f.write_text("ner_app: null\noperator: replace\n")  # patterns only: no NER run needed
    return f


def test_requests_are_redacted_and_the_removed_types_named(patterns_file):
    cfg = guard_config(str(patterns_file))
    req = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Mail jane.doe@example.com about card 4111 1111 1111 1111."},
                {"role": "user", "content": [{"type": "text", "text": "from 192.168.1.20"}]},
            ],
        }
    )
    clean, removed = redact_request(req, cfg)
    assert removed == ["CREDIT_CARD", "EMAIL_ADDRESS", "IP_ADDRESS"]
    assert clean.messages[1].content == "Mail <EMAIL_ADDRESS> about card <CREDIT_CARD>."
    assert clean.messages[2].content == [{"type": "text", "text": "from <IP_ADDRESS>"}]
    assert clean.messages[0].content == "You are a helpful assistant."
    assert "jane.doe" in req.messages[1].content  # the caller's request object is left as it was
    body = CompletionBody.model_validate({"model": "m", "prompt": "Call (415) 555-0134 now"})
    clean, removed = redact_request(body, cfg)
    assert clean.prompt == "Call <PHONE_NUMBER> now" and removed == ["PHONE_NUMBER"]


def test_setting_values_and_errors(tmp_path, patterns_file):
    assert guard_config("") is None and guard_config("off") is None
    assert guard_config("on").ner_app == "entity-extraction"
    assert guard_config(str(patterns_file)).ner_app is None
    with pytest.raises(ConfigError, match="LUODI_GUARD_PII") as e:
        guard_config(str(tmp_path / "missing.yaml"))
    assert e.value.param == "LUODI_GUARD_PII"
    bad = tmp_path / "bad.yaml"
    bad.write_text("operator: shred\n")
    with pytest.raises(ConfigError) as e:
        guard_config(str(bad))
    assert e.value.param == "LUODI_GUARD_PII.operator"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        guard_config(str(bad))
    with pytest.raises(NotFound, match="luodi train examples/entity-extraction.yaml"):
        check_ready(guard_config("on").model_copy(update={"ner_app": "no-such-ner-app"}))


def test_live_server_redacts_before_the_model(luodi_home, patterns_file):
    from conftest import start_server

    from luodi.serve.app import create_app
    from luodi.settings import Settings

    settings = Settings(home=luodi_home, auth="off", guard_pii=str(patterns_file))
    url, server, thread = start_server(create_app(settings, preload=False), name="pii-guard-server")
    try:
        body = {
            "model": "bundled:smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "Repeat exactly: my email is jane.doe@example.com"}],
            "max_tokens": 24,
            "temperature": 0,
        }
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
        assert r.status_code == 200, r.text
        assert r.headers[HEADER] == "EMAIL_ADDRESS"
        assert "jane.doe" not in r.json()["choices"][0]["message"]["content"]  # the model never saw it
        r = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=300)
        assert r.status_code == 200 and r.headers[HEADER] == "EMAIL_ADDRESS"
        body["messages"] = [{"role": "user", "content": "Say hello."}]
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
        assert r.status_code == 200 and r.headers[HEADER] == "none"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
