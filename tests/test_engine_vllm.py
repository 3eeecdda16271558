"""The vllm engine (issue 20): chosen by `auto` only where vLLM and a CUDA GPU are present, refused with the reason
elsewhere, and on a GPU machine the OpenAI features luodi offers on llama.cpp, through the official client against
`luodi serve --engine vllm`. CI has no GPU: there only the choice and the refusal run; the GPU test skips, naming
why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from luodi.engines import engine_options, get_engine
from luodi.engines.choice import choose_backend, why_not
from luodi.engines.vllm import vllm_command
from luodi.errors import ConfigError
from luodi.settings import get_settings

REASON = why_not()
LUODI = [sys.executable, "-c", "from luodi.cli import main; main()"]  # the CLI of this interpreter


def test_auto_picks_vllm_only_where_it_can_run():
    assert choose_backend("auto") == ("llamacpp" if REASON else "vllm")
    assert choose_backend("LlamaCpp") == "llamacpp" and choose_backend("openai") == "openai"
    assert get_settings().engine == "auto"  # the default
    opts = engine_options(get_settings(), "vllm")
    assert {"vllm_args", "vllm_tool_parser", "vllm_start_timeout_s", "n_ctx"} <= opts.keys()
    assert "upstream" not in opts  # luodi starts the server: no upstream URL to set


@pytest.mark.skipif(REASON is None, reason="vLLM runs on this machine: nothing to refuse")
def test_forcing_vllm_without_it_says_why_and_what_to_use():
    with pytest.raises(ConfigError) as e:
        get_engine(None, "vllm")
    assert e.value.param == "engine"
    assert REASON in e.value.message and "--engine llamacpp" in e.value.message
    # the CLI stops before listening, with the same message and no traceback
    out = subprocess.run([*LUODI, "serve", "--engine", "vllm", "--port", "0", "--no-key"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode != 0
    assert "engine 'vllm' cannot run here" in out.stdout + out.stderr
    assert "luodi[vllm]" in out.stderr  # printed as written: brackets in a message are not markup
    assert "Traceback" not in out.stdout + out.stderr


def test_vllm_command_line_follows_the_settings():
    cmd = vllm_command("/models/smollm2", "bundled:smollm2", 8123, n_ctx=4096, tool_parser="hermes",
                       extra="--gpu-memory-utilization 0.5 --max-num-seqs 128")
    assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert flags["--model"] == "/models/smollm2" and flags["--served-model-name"] == "bundled:smollm2"
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "8123" and flags["--max-model-len"] == "4096"
    assert cmd[cmd.index("--tool-call-parser") + 1] == "hermes" and "--enable-auto-tool-choice" in cmd
    assert cmd[-4:] == ["--gpu-memory-utilization", "0.5", "--max-num-seqs", "128"]  # last: they override
    assert "--enable-auto-tool-choice" not in vllm_command("/m", "m", 1, n_ctx=2048, tool_parser="")
    with pytest.raises(ConfigError) as e:
        vllm_command("/m", "m", 1, n_ctx=2048, extra="--dtype 'bfloat16")
    assert e.value.param == "vllm_args"


# ------------------------------------------------------------------------------- on a CUDA GPU with vLLM only
@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    if REASON is not None:
        pytest.skip(f"the vllm engine cannot run here: {REASON}")
    import httpx

    from luodi.engines.vllm import free_port

    port = free_port()
    home = tmp_path_factory.mktemp("vllm-home")
    env = {**os.environ, "LUODI_HOME": str(home), "LUODI_AUTH": "off", "HF_HUB_OFFLINE": "1",
           "LUODI_ENGINE": "vllm"}
    proc = subprocess.Popen([*LUODI, "serve", "--port", str(port), "--no-key"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail(f"luodi serve --engine vllm did not start: {proc.stdout.read()[-3000:]}")
    yield url
    proc.terminate()
    proc.wait(60)


def test_openai_features_on_vllm(vllm_server):
    import httpx
    import openai

    assert httpx.get(f"{vllm_server}/health").json()["engine"]["backend"] == "vllm"
    client = openai.OpenAI(base_url=f"{vllm_server}/v1", api_key="none")
    model = client.models.list().data[0].id
    ask = [{"role": "user", "content": "Name a colour."}]
    # n choices with logprobs
    r = client.chat.completions.create(model=model, messages=ask, max_tokens=8, n=2, temperature=0.8,
                                       logprobs=True, top_logprobs=2)
    assert len(r.choices) == 2 and all(c.logprobs and c.logprobs.content for c in r.choices)
    # streaming, with usage
    chunks = list(client.chat.completions.create(model=model, messages=ask, max_tokens=8, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) and chunks[-1].usage
    # JSON schema
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    r = client.chat.completions.create(model=model, messages=ask, max_tokens=32, temperature=0,
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "c", "schema": schema}})
    assert "colour" in json.loads(r.choices[0].message.content)
    # a named tool
    tool = {"type": "function", "function": {"name": "paint", "parameters": schema}}
    r = client.chat.completions.create(model=model, messages=ask, max_tokens=32, temperature=0, tools=[tool],
                                       tool_choice={"type": "function", "function": {"name": "paint"}})
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "paint" and "colour" in json.loads(call.function.arguments)
    # penalties and logit_bias: a token banned by -100 never appears
    plain = client.completions.create(model=model, prompt="1, 2, 3,", max_tokens=4, temperature=0)
    first = client.completions.create(model=model, prompt="1, 2, 3,", max_tokens=1, temperature=0, logprobs=1)
    banned = first.choices[0].logprobs.tokens[0]
    from transformers import AutoTokenizer

    from luodi.models import hf_model_dir

    tok = AutoTokenizer.from_pretrained(hf_model_dir(model, "the test"))
    ids = tok.encode(banned, add_special_tokens=False)
    biased = client.completions.create(model=model, prompt="1, 2, 3,", max_tokens=4, temperature=0,
                                       logit_bias={str(ids[0]): -100}, frequency_penalty=1.0, presence_penalty=0.5)
    assert biased.choices[0].text and not biased.choices[0].text.startswith(banned) and plain.choices[0].text
