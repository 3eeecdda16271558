"""The `vllm` engine: the chat model on a GPU, served by vLLM's own OpenAI server that luodi starts and stops.

Why a managed vLLM server behind the `openai` engine rather than vLLM's engine in luodi's process: vLLM's server
already implements every OpenAI field luodi offers on llama.cpp (streaming, n, logprobs, JSON schema through guided
decoding, tools, penalties, logit_bias) on its own scheduler, so luodi forwards requests to it exactly as to any
upstream (luodi.engines.upstream) and keeps its keys, limits, metrics, audit log and guards in front. vLLM's CUDA
processes also live and die apart from luodi's: a GPU fault kills the vLLM server, not luodi.

`LUODI_ENGINE=auto` (the default) picks this engine when vLLM is installed (`pip install 'luodi[vllm]'`) and a
CUDA GPU is visible, else llama.cpp; `--engine vllm` forces it and says why when it cannot run. The model is the
chat model as a Hugging Face directory (a GGUF such as the bundled SmolLM2 is converted once, luodi.models).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from luodi.engines.choice import why_not
from luodi.engines.upstream import UpstreamEngine
from luodi.errors import ConfigError, LuodiError

log = logging.getLogger(__name__)

LOG_TAIL = 40  # lines of vLLM's own log quoted when it fails to start


def vllm_command(model_dir: str, served_name: str, port: int, *, n_ctx: int, tool_parser: str = "hermes",
                 extra: str = "") -> list[str]:
    """The command line of vLLM's OpenAI server for luodi's settings: luodi's context length (its prompt checks
    use the same n_ctx), tool calling with `tool_parser` (empty: only named tool_choice, by guided decoding),
    listening on 127.0.0.1 only (luodi is the front door), then `extra` (LUODI_VLLM_ARGS), which may override any.
    The concurrent sequences stay vLLM's own choice (LUODI_MAX_RUNNING sizes llama.cpp's CPU batch, far below
    what a GPU holds); `--max-num-seqs` in LUODI_VLLM_ARGS sets them."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", str(n_ctx), "--disable-uvicorn-access-log"]
    if tool_parser:
        cmd += ["--enable-auto-tool-choice", "--tool-call-parser", tool_parser]
    try:
        cmd += shlex.split(extra or "")
    except ValueError as e:
        raise ConfigError(f"LUODI_VLLM_ARGS is not a valid command line ({e}); quote values with spaces",
                          param="vllm_args") from e
    return cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmEngine(UpstreamEngine):
    """luodi's chat engine on a vLLM server this process started (see the module docstring)."""

    name = "vllm"

    def __init__(self, spec: str, model_id: str | None = None, *, n_ctx: int = 2048, vllm_args: str = "",
                 vllm_tool_parser: str = "hermes", vllm_start_timeout_s: float = 900,
                 upstream_timeout_s: float = 600, upstream_retries: int = 2, **_ignored: Any) -> None:
        reason = why_not()
        if reason is not None:
            raise ConfigError(f"engine 'vllm' cannot run here: {reason}; use --engine llamacpp (LUODI_ENGINE), "
                              "or auto to pick vLLM only where it can run", param="engine")
        from luodi.models import hf_model_dir

        served = model_id or spec
        model_dir = hf_model_dir(spec, "the vllm engine", field="chat_model")
        port = free_port()
        cmd = vllm_command(model_dir, served, port, n_ctx=n_ctx, tool_parser=vllm_tool_parser, extra=vllm_args)
        fd, name = tempfile.mkstemp(prefix="luodi-vllm-", suffix=".log")
        self._log = Path(name)
        log.info("starting vLLM on 127.0.0.1:%d for %s (log: %s)", port, served, self._log)
        with os.fdopen(fd, "wb") as out:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            self._wait_ready(url, vllm_start_timeout_s)
            super().__init__(served, upstream=f"{url}/v1", upstream_model=served, n_ctx=n_ctx,
                             upstream_timeout_s=upstream_timeout_s, upstream_retries=upstream_retries)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, url: str, timeout_s: float) -> None:
        """Poll vLLM's GET /health until it answers 200; its exit or the time-out is an error quoting its log."""
        import httpx

        deadline = time.monotonic() + timeout_s
        while True:
            code = self._proc.poll() if self._proc else None
            if code is not None:
                raise LuodiError(f"vLLM exited with status {code} while starting; its last lines:\n{self.log_tail()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise LuodiError(f"vLLM did not answer {url}/health within {timeout_s:g} s (LUODI_VLLM_START_TIMEOUT_S)"
                                 f"; its last lines:\n{self.log_tail()}")
            time.sleep(1.0)

    def log_tail(self) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-LOG_TAIL:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop the vLLM server (its whole process group: vLLM starts engine-core workers) and forget it."""
        super().close()
        proc, self._proc = getattr(self, "_proc", None), None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
