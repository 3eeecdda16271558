"""The LLM CLI: generate, chat (piped stdin), embed, models, keys, serve (real process), demo hooks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from conftest import free_port
from typer.testing import CliRunner

from luodi.cli import app

runner = CliRunner()


def run(*args: str, input: str | None = None):
    r = runner.invoke(app, list(args), input=input)
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r


def test_generate_streams_text():
    r = run("generate", "Name a color.", "--max-tokens", "8", "--temperature", "0")
    assert r.stdout.strip()


def test_generate_schema_output_parses(tmp_path):
    schema = {
        "type": "object",
        "properties": {
            "color": {"type": "string", "enum": ["black", "white", "orange"]},
            "lives": {"type": "integer"},
        },
        "required": ["color", "lives"],
        "additionalProperties": False,
    }
    (tmp_path / "cat.json").write_text(json.dumps(schema))
    r = run(
        "generate", "Describe a cat as JSON.", "--max-tokens", "40", "--schema", str(tmp_path / "cat.json")
    )
    data = json.loads(r.stdout)
    assert data["color"] in ("black", "white", "orange") and isinstance(data["lives"], int)


def test_generate_bad_input_is_a_clear_error():
    r = runner.invoke(app, ["generate", "hi " * 4000, "--max-tokens", "4"])
    assert r.exit_code == 2
    assert "context window" in " ".join(r.output.split())  # the console may wrap the message


def test_chat_piped_multi_turn_with_commands():
    script = (
        "/system You answer in one short sentence.\nHello!\n/reset\nWhat is 2+2?\n/bogus\n/exit\nnever read\n"
    )
    r = run("chat", "--max-tokens", "12", "-t", "0", input=script)
    out = r.output
    assert "system prompt set" in out and "conversation cleared" in out
    assert out.count("model>") == 2  # two questions answered, nothing after /exit
    assert "unknown command" in out


def test_embed_prints_vectors_and_similarity():
    r = run("embed", "--json", "a dog runs in the park", "a puppy is running outside", "tax law reform")
    data = json.loads(r.stdout)
    assert data["dim"] == 384 and len(data["embeddings"]) == 3
    import numpy as np

    v = np.array(data["embeddings"])
    assert v[0] @ v[1] > v[0] @ v[2]
    r = run("embed", "hello", "world")
    assert "dim=384" in r.stdout and "cosine similarity" in r.stdout


def test_models_lists_bundled():
    r = run("models")
    assert "bundled:smollm2-135m-instruct" in r.stdout and "bundled:minilm-l6" in r.stdout
    assert "chat engine" in r.stdout and "self-check" in r.stdout and "passed in" in r.stdout


def test_keys_create_list_revoke():
    r = run("keys", "create", "cli-key", "--rpm", "30")
    key = re.search(r"ld-[A-Za-z0-9_-]{20,}", r.stdout).group(0)
    key_id = int(re.search(r"created key (\d+)", r.stdout).group(1))
    from luodi.keys import verify_key

    assert verify_key(key).rate_limit_rpm == 30
    listed = run("keys", "list").stdout
    assert "cli-key" in listed and key not in listed
    run("keys", "revoke", str(key_id))
    from luodi.errors import AuthError

    with pytest.raises(AuthError):
        verify_key(key)
    r = runner.invoke(app, ["keys", "revoke", "987654"])
    assert r.exit_code == 2 and "no API key with id 987654" in r.output


def test_demo_steps_are_the_apps_then_the_assistant_and_a_failed_one_is_skipped():
    from luodi.cli import llm as cli_llm

    assert [label for label, _ in cli_llm.demo_steps()] == ["demo apps", "customer-service assistant"]
    ran = []

    def broken() -> None:
        raise ValueError("no disk")

    steps = [("first", lambda: ran.append("first")), ("broken", broken), ("last", lambda: ran.append("last"))]
    assert cli_llm.run_demo_steps(steps) == ["first", "last"]
    assert ran == ["first", "last"]


def test_serve_prints_url_key_and_examples(luodi_home):
    port = free_port()
    env = {**os.environ, "LUODI_HOME": str(luodi_home), "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", "from luodi.cli import main; main()", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert url in out
    assert "curl " in out and "from openai import OpenAI" in out
    key = re.search(r"ld-[A-Za-z0-9_-]{20,}", out).group(0)
    from luodi.keys import verify_key

    assert verify_key(key).name == "luodi-serve"
