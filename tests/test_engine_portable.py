"""llama.cpp on whatever CPU runs the tests: a real decode in a child process (a crash fails this test, not the
suite), the choice of CPU kernels stepping down past one that crashes, and a server that falls back to the
transformers engine when the self-check fails, and still answers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port

from luodi.engines import ggml_cpu
from luodi.models import resolve

MODEL = resolve("bundled:smollm2-135m-instruct").path
CRASHING_BACKEND_C = """
#include <signal.h>
__attribute__((constructor)) static void crash_on_load(void) { raise(SIGILL); }  /* like AMX on a VM without it */
int ggml_backend_score(void) { return 1000; }
"""


@pytest.fixture(scope="module")
def crashing_backend(tmp_path_factory) -> Path:
    """A CPU backend library that dies with SIGILL as soon as it is loaded."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the crashing test library")
    folder = tmp_path_factory.mktemp("crash")
    (folder / "crash.c").write_text(CRASHING_BACKEND_C)
    lib = folder / "libggml-cpu-crashy.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(folder / "crash.c")], check=True)
    return lib


def test_real_decode_in_a_child_process():
    choice = ggml_cpu.current_choice(MODEL)
    res = ggml_cpu.run_child(MODEL, variant=Path(choice.path) if choice.path else None, n_tokens=8, threads=2)
    if not res.get("tokens"):
        pytest.fail(ggml_cpu.failure_message(f"the test decode in a child process {res.get('error')}", choice))
    assert len(res["tokens"]) == 8
    assert "Rome" in res["text"], f"{ggml_cpu.PROBE_PROMPT!r} continued with {res['text']!r}"
    assert res["tok_s"] > 0


def test_a_crashing_child_is_reported_with_its_signal(crashing_backend):
    res = ggml_cpu.run_child(MODEL, variant=crashing_backend, n_tokens=4, threads=1)
    assert res == {"error": "crashed (SIGILL)"}


def test_choice_steps_down_past_a_crashing_level(crashing_backend, tmp_path, monkeypatch):
    paths = ggml_cpu.variant_paths()
    if not paths:
        pytest.skip("this llama-cpp-python has no CPU variants (not the portable build)")
    monkeypatch.setenv("LUODI_NATIVE_CACHE", str(tmp_path))
    plain = list(paths)[-1]  # the plainest level (AVX2): keep the test short
    choice = ggml_cpu.choose_variant(MODEL, {"crashy": crashing_backend, plain: paths[plain]})
    assert choice.variant == plain
    assert choice.tried["crashy"] == "crashed (SIGILL)"
    assert choice.tried[plain].startswith("ok ")
    remembered = list((tmp_path / "ggml-cpu").glob("*.json"))
    assert len(remembered) == 1 and plain in remembered[0].read_text()


def test_fallback_off_makes_a_failed_self_check_an_error(crashing_backend, monkeypatch):
    from luodi.engines import load_engine
    from luodi.errors import ConfigError
    from luodi.settings import reset_settings

    if ggml_cpu.active_choice() is not None:
        pytest.skip("this process already loaded its CPU kernels (the self-check ran on them)")
    monkeypatch.setenv("LUODI_GGML_CPU", str(crashing_backend))
    monkeypatch.setenv("LUODI_ENGINE_FALLBACK", "false")
    reset_settings()
    try:
        with pytest.raises(ConfigError) as e:
            load_engine("bundled:smollm2-135m-instruct", "llamacpp", threads=1)
    finally:
        reset_settings()
    msg = str(e.value)
    assert "crashed (SIGILL)" in msg and "luodi.engines.llamacpp_build" in msg and "CPU features" in msg


def test_server_falls_back_to_transformers_and_answers(crashing_backend, luodi_home):
    """The self-check fails (the chosen kernels crash): the server starts on transformers, says so, answers."""
    import openai

    port = free_port()
    env = {**os.environ, "LUODI_GGML_CPU": str(crashing_backend), "LUODI_AUTH": "off",
           "LUODI_HOME": str(luodi_home), "LUODI_THREADS": "2"}
    cmd = [sys.executable, "-c", "from luodi.cli import main; main()", "serve", "--port", str(port), "--no-key"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                if health["engine_loaded"]:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()
        assert health and health["engine_loaded"], health
        assert health["status"] == "degraded"
        assert health["engine"]["backend"] == "transformers" and health["engine"]["degraded"]
        assert "crashed (SIGILL)" in health["engine"]["reason"]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        out = client.chat.completions.create(model="bundled:smollm2-135m-instruct", max_tokens=8, temperature=0,
                                             messages=[{"role": "user", "content": "Name a colour."}])
        assert out.choices[0].message.content.strip()
    finally:
        proc.terminate()
        try:
            log, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            log, _ = proc.communicate()
    assert "self-check failed" in log and "Serving on the transformers engine" in log


def test_luodi_models_shows_the_degraded_engine(crashing_backend, luodi_home):
    env = {**os.environ, "LUODI_GGML_CPU": str(crashing_backend), "LUODI_HOME": str(luodi_home), "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-c", "from luodi.cli import main; main()", "models"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "transformers (DEGRADED)" in out.stdout and "crashed (SIGILL)" in out.stdout
