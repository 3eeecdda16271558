"""The `openai` engine: a luodi server in front of an OpenAI-compatible upstream.

The upstream is a real luodi server on the bundled model (llama.cpp, the `live_server` fixture); the front is a
second luodi server (`engine="openai"`, `upstream=<live_server>/v1`) under uvicorn, driven by the official
`openai` client: what the upstream does comes through, upstream failures come back as clear luodi errors, and the
front's own keys, rate limits, metrics and audit log apply.
"""

from __future__ import annotations

import json
import os

import httpx
import openai
import pytest
from conftest import free_port, start_server

from luodi.errors import ConfigError
from luodi.settings import Settings

CHAT = "bundled:smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
KEY_ENV = "LUODI_TEST_UPSTREAM_KEY"


def front_settings(upstream: str, **kw) -> Settings:
    return Settings(**{"engine": "openai", "upstream": upstream, "upstream_key_env": KEY_ENV, "upstream_retries": 0,
                       "upstream_timeout_s": 120, **kw})


@pytest.fixture(scope="module")
def front(live_server):
    """A luodi server (own key) in front of live_server; yields (url, admin key)."""
    from luodi.keys import create_key
    from luodi.serve.app import create_app

    os.environ[KEY_ENV] = live_server.key
    app = create_app(front_settings(live_server.base_url))
    url, server, thread = start_server(app, "luodi-front")
    try:
        yield url, create_key("pytest-front", admin=True).key
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def client(front) -> openai.OpenAI:
    url, key = front
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=300)


def test_chat_stream_and_models(client, live_server):
    assert [m.id for m in client.models.list().data][0] == CHAT  # the upstream's model, under its id
    # (no comparison of texts between calls: llama.cpp's greedy output can change with the batch it runs in and a
    # cached prompt prefix, so two identical requests may differ: the checks are on what came back, not equal texts)
    r = client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=8, temperature=0)
    direct = live_server.openai(max_retries=0).chat.completions.create(
        model=CHAT, messages=HELLO, max_tokens=8, temperature=0)
    assert r.choices[0].message.content.strip() and r.choices[0].finish_reason in ("stop", "length")
    assert r.model == CHAT and 0 < r.usage.completion_tokens <= 8
    assert r.usage.prompt_tokens == direct.usage.prompt_tokens  # the same prompt reached the upstream
    events = list(client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    assert text.strip()
    assert events[-1].choices == [] and 0 < events[-1].usage.completion_tokens <= 8
    plain = list(client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=4, stream=True))
    assert all(e.choices and e.usage is None for e in plain)  # usage only when asked for


def test_n_and_logprobs(client):
    r = client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=4, n=2, seed=3,
                                       logprobs=True, top_logprobs=2)
    assert [c.index for c in r.choices] == [0, 1]
    lp = r.choices[0].logprobs.content
    assert lp and all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in lp)


def test_tool_call_and_json_schema(client):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    r = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=tools,
        tool_choice="required", max_tokens=40, temperature=0)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}, "required": ["name"]}
    r = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Give a name as JSON."}], max_tokens=30, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
    assert isinstance(json.loads(r.choices[0].message.content)["name"], str)


def test_text_completion(client):
    r = client.completions.create(model=CHAT, prompt="The capital of France is", max_tokens=4, temperature=0)
    assert r.choices[0].text and r.usage.completion_tokens > 0


def test_upstream_refusal_is_a_400_quoting_it(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=100_000)
    err = e.value.body
    assert err["param"] == "max_tokens" and "the upstream refused the request" in err["message"]


def test_front_keys_rate_limits_metrics_and_audit(front, client):
    from luodi.keys import create_key

    url, admin = front
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": CHAT, "messages": HELLO, "max_tokens": 2})
    assert r.status_code == 401  # the front's keys, not the upstream's
    slow = create_key("pytest-front-rpm", rate_limit_rpm=1).key
    h = {"Authorization": f"Bearer {slow}"}
    body = {"model": CHAT, "messages": HELLO, "max_tokens": 2}
    assert httpx.post(f"{url}/v1/chat/completions", json=body, headers=h, timeout=300).status_code == 200
    r = httpx.post(f"{url}/v1/chat/completions", json=body, headers=h, timeout=300)
    assert r.status_code == 429 and r.headers["Retry-After"]
    metrics = httpx.get(f"{url}/metrics").text
    assert any('route="/v1/chat/completions"' in line and 'status="200"' in line
               for line in metrics.splitlines() if line.startswith("luodi_requests_total"))
    gen = [line for line in metrics.splitlines() if line.startswith("luodi_generated_tokens_total")]
    assert gen and float(gen[0].split()[-1]) > 0  # usage counts from the upstream
    rows = httpx.get(f"{url}/v1/audit-log", headers={"Authorization": f"Bearer {admin}"}).json()["data"]
    assert any(x["detail"]["route"] == "/v1/chat/completions" and x["detail"]["status"] == 429 for x in rows)


def test_engine_interface_for_rag_and_agents(live_server):
    """RAG, agents and the assistant use chat_prompt / tokenize / generate: they reach the upstream too."""
    from luodi.engines import SamplingParams, complete, get_engine
    from luodi.llm import run_sync

    os.environ[KEY_ENV] = live_server.key
    eng = get_engine(backend="openai", upstream=live_server.base_url, upstream_key_env=KEY_ENV)
    assert eng.model_id == CHAT
    prompt = eng.chat_prompt(HELLO)
    out = run_sync(complete(eng, eng.tokenize(prompt), SamplingParams(max_tokens=6, temperature=0)))
    assert out.text and out.finish_reason in ("stop", "length") and out.completion_tokens > 0
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    out = run_sync(complete(eng, prompt, SamplingParams(max_tokens=12, temperature=0, json_schema=schema)))
    assert isinstance(json.loads(out.text)["ok"], bool)
    out = run_sync(complete(eng, "Once upon a time", SamplingParams(max_tokens=3, temperature=0, logprobs=1)))
    assert out.text and out.logprobs and out.logprobs[0]["logprob"] <= 0


def _front_client(settings: Settings):
    from fastapi.testclient import TestClient

    from luodi.keys import create_key
    from luodi.serve.app import create_app

    key = create_key("pytest-front-errors").key
    tc = TestClient(create_app(settings))
    tc.headers["Authorization"] = f"Bearer {key}"
    return tc


def test_upstream_down_is_a_502_naming_it(live_server):
    down = f"http://127.0.0.1:{free_port()}/v1"
    os.environ[KEY_ENV] = "x"
    with _front_client(front_settings(down)) as tc:  # not even its model is known: asked again per request
        r = tc.post("/v1/chat/completions", json={"model": CHAT, "messages": HELLO, "max_tokens": 2})
        assert r.status_code == 502, r.text
        err = r.json()["error"]
        assert err["code"] == "upstream_error" and err["param"] == "upstream"
        assert f"cannot reach the upstream {down}" in err["message"]
        r = tc.post("/v1/chat/completions", json={"model": CHAT, "messages": HELLO, "stream": True})
        assert r.status_code == 502 and down in r.json()["error"]["message"]


def test_bad_upstream_key_is_a_502_naming_the_setting(live_server):
    os.environ[KEY_ENV] = "ld-not-a-valid-key"
    with _front_client(front_settings(live_server.base_url, upstream_model=CHAT)) as tc:
        r = tc.post("/v1/chat/completions", json={"model": CHAT, "messages": HELLO, "max_tokens": 2})
        assert r.status_code == 502, r.text
        err = r.json()["error"]
        assert err["param"] == "upstream_key_env" and "refused luodi's credentials (401" in err["message"]


def test_upstream_timeout_is_a_504(live_server):
    os.environ[KEY_ENV] = live_server.key
    with _front_client(front_settings(live_server.base_url, upstream_model=CHAT, upstream_timeout_s=0.001)) as tc:
        r = tc.post("/v1/chat/completions", json={"model": CHAT, "messages": HELLO, "max_tokens": 64})
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        assert "LUODI_UPSTREAM_TIMEOUT_S" in r.json()["error"]["message"]


@pytest.mark.parametrize(("kw", "param", "words"), [
    ({"upstream": ""}, "upstream", "set LUODI_UPSTREAM"),
    ({"upstream": "localhost:8001/v1"}, "upstream", "must be an http:// or https:// URL"),
    ({"upstream_key_env": "LUODI_TEST_NOT_SET_ANYWHERE"}, "upstream_key_env", "LUODI_TEST_NOT_SET_ANYWHERE is not set"),
    ({"upstream_key_env": "sk-abc123"}, "upstream_key_env", "not the key itself"),
])
def test_bad_settings_name_the_setting(kw, param, words):
    from luodi.engines.upstream import UpstreamEngine

    opts = {"upstream": "http://127.0.0.1:9/v1", "upstream_model": "m", **kw}
    with pytest.raises(ConfigError) as e:
        UpstreamEngine(**opts)
    assert e.value.param == param and words in e.value.message


def test_serve_cli_stops_on_a_bad_upstream(monkeypatch):
    from typer.testing import CliRunner

    from luodi.cli import app
    from luodi.settings import reset_settings

    for name in ("ENGINE", "UPSTREAM", "PORT", "UPSTREAM_KEY_ENV"):  # serve sets them: restored afterwards
        monkeypatch.setenv(f"LUODI_{name}", os.environ.get(f"LUODI_{name}", ""))
    monkeypatch.delenv("LUODI_PORT")
    r = CliRunner().invoke(app, ["serve", "--engine", "openai", "--upstream", "ftp://x", "--no-key",
                                 "--port", str(free_port())])
    reset_settings()
    assert r.exit_code != 0 and "LUODI_UPSTREAM" in r.output, r.output


def test_a_model_spec_names_an_upstream_for_one_agent(live_server):
    """'openai:MODEL@URL' (an agent's or assistant YAML's model) reaches that upstream whatever the server's engine."""
    from luodi.agent.calculator import calculator
    from luodi.agent.runtime import Agent
    from luodi.engines import get_engine, upstream_spec

    assert upstream_spec("openai:llama3.1") == {"upstream_model": "llama3.1"}
    assert upstream_spec(f"openai:{CHAT}@{live_server.base_url}") == {"upstream_model": CHAT,
                                                                       "upstream": live_server.base_url}
    assert upstream_spec(CHAT) is None
    os.environ[KEY_ENV] = live_server.key
    spec = f"openai:{CHAT}@{live_server.base_url}"
    eng = get_engine(spec, upstream_key_env=KEY_ENV)
    assert eng.name == "openai" and eng.model_id == CHAT and eng.url == live_server.base_url
    res = Agent([calculator], engine=eng).run("What is 17 * 23?")
    assert res.steps >= 1 and res.prompt_tokens > 0 and res.completion_tokens > 0  # counted by the upstream
    assert res.stop_reason and res.answer is not None


def test_cli_generate_and_health_on_an_upstream(live_server, front, monkeypatch):
    from typer.testing import CliRunner

    from luodi.cli import app
    from luodi.settings import reset_settings

    url, _ = front
    engine = httpx.get(f"{url}/health").json()["engine"]
    assert engine["backend"] == "openai" and engine["upstream"] == live_server.base_url and engine["model"] == CHAT
    monkeypatch.setenv(KEY_ENV, live_server.key)
    monkeypatch.setenv("LUODI_UPSTREAM_KEY_ENV", KEY_ENV)
    monkeypatch.setenv("LUODI_CHAT_MODEL", os.environ.get("LUODI_CHAT_MODEL", CHAT))  # generate --model sets it
    reset_settings()
    try:
        r = CliRunner().invoke(app, ["generate", "Name a color.", "--max-tokens", "6", "--temperature", "0",
                                     "--model", f"openai:{CHAT}@{live_server.base_url}"])
    finally:
        monkeypatch.undo()
        reset_settings()
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert r.stdout.strip()


def _mocked(monkeypatch, handler):
    """An UpstreamEngine whose upstream is `handler` (httpx.MockTransport): failures the live upstream won't show."""
    from luodi.engines.upstream import UpstreamEngine

    eng = UpstreamEngine(upstream="http://upstream.test/v1", upstream_model="m", upstream_retries=0)
    monkeypatch.setattr(eng, "_client", lambda: openai.AsyncOpenAI(
        base_url=eng.url, api_key="x", max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler))))
    return eng


@pytest.mark.parametrize(("status", "headers", "luodi_status", "words"), [
    (500, {}, 502, "the upstream http://upstream.test/v1 failed (500: boom)"),
    (429, {"retry-after": "7"}, 503, "busy or rate-limiting luodi (429: boom)"),
    (404, {}, 502, "check LUODI_UPSTREAM (it usually ends in /v1)"),
    (403, {}, 502, "refused luodi's credentials (403: boom)"),
])
def test_upstream_status_errors_map_to_luodi_errors(monkeypatch, status, headers, luodi_status, words):
    import asyncio

    from luodi import llm
    from luodi.errors import LuodiError
    from luodi.llm.openai_types import ChatCompletionRequest

    eng = _mocked(monkeypatch, lambda req: httpx.Response(status, json={"error": {"message": "boom"}},
                                                          headers=headers))
    with pytest.raises(LuodiError) as e:
        asyncio.run(llm.chat_completion(eng, ChatCompletionRequest(messages=HELLO), model="m"))
    assert e.value.status == luodi_status and words in e.value.message
    if status == 429:
        assert e.value.retry_after == 7


def test_an_upstream_failing_mid_stream_ends_the_stream_with_an_error_event(monkeypatch):
    import asyncio

    from luodi import llm
    from luodi.llm.openai_types import ChatCompletionRequest
    from luodi.serve.openai_routes import _sse

    sse = (b'data: {"id":"x","object":"chat.completion.chunk","created":0,"model":"m",'
           b'"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
           b'data: {"error": {"message": "the GPU fell over"}}\n\n')
    eng = _mocked(monkeypatch, lambda req: httpx.Response(200, content=sse,
                                                          headers={"content-type": "text/event-stream"}))

    async def run() -> list[str]:
        events = await llm.chat_completion(eng, ChatCompletionRequest(messages=HELLO, stream=True), model="served")
        return [e async for e in _sse(events)]

    out = asyncio.run(run())
    first, err = json.loads(out[0]), json.loads(out[-2])["error"]
    assert first["choices"][0]["delta"]["content"] == "Hi" and first["model"] == "served"
    assert err["type"] == "server_error" and "the GPU fell over" in err["message"] and out[-1] == "[DONE]"
    assert eng.stats()["running"] == 0


def test_a_knowledge_base_answers_through_the_upstream(live_server, tmp_path):
    from luodi import rag
    from luodi.engines import get_engine

    (tmp_path / "lighthouse.txt").write_text(
        "The lighthouse at Port Aven was built by Marie Kerlan in 1871. It is 31 metres tall.\n")
    rag.create_kb("upstream-facts")
    assert len(rag.add_documents("upstream-facts", [tmp_path]).added) == 1
    os.environ[KEY_ENV] = live_server.key
    eng = get_engine(f"openai:{CHAT}@{live_server.base_url}", upstream_key_env=KEY_ENV)
    ans = rag.ask("upstream-facts", "Who built the lighthouse at Port Aven?", engine=eng)
    assert ans.found and ans.answer.strip() and ans.passages
    assert "Kerlan" in ans.passages[0].text


def test_fields_luodi_does_not_know_reach_the_upstream(monkeypatch):
    import asyncio

    from luodi import llm
    from luodi.llm.openai_types import ChatCompletionRequest

    seen = {}

    def handler(req: httpx.Request) -> httpx.Response:
        seen.update(json.loads(req.content))
        return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                         "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0}})

    eng = _mocked(monkeypatch, handler)
    req = ChatCompletionRequest.model_validate({"messages": HELLO, "reasoning_effort": "low", "top_k": 5,
                                                "model": "whatever"})
    out = asyncio.run(llm.chat_completion(eng, req, model="served")).dump()
    assert seen == {"messages": HELLO, "reasoning_effort": "low", "top_k": 5, "model": "m"}  # only what was sent
    assert out["model"] == "served"
