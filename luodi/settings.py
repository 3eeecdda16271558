"""Process-wide settings, read from LUODI_* environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob a deployment can turn, each from an env var `LUODI_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="LUODI_", extra="ignore")

    home: Path = Path("~/.luodi").expanduser()
    database_url: str | None = None  # default: sqlite under home
    auth: str = "on"  # "off" only for local demos
    host: str = "127.0.0.1"
    port: int = 8000
    chat_model: str = "bundled:smollm2-135m-instruct"
    embed_model: str = "bundled:minilm-l6"
    embed_runtime: Literal["torch", "onnx", "onnx-int8"] = Field(
        "torch",
        description="how sentence embeddings are computed: torch, or the encoder exported to ONNX (float32 or "
        "int8, cached under the cache dir; int8 only where its cosine to float32 is >= 0.99 on a check set)",
    )
    engine: str = Field(
        "auto",
        description="the chat engine: auto (vllm where vLLM is installed and a CUDA GPU is visible, else llamacpp), "
        "llamacpp (fast CPU, GGUF), transformers (reference; any HF model), openai (an OpenAI-compatible upstream: "
        "see upstream*) or vllm (a vLLM server luodi starts on the GPU: see vllm_*)",
    )
    vllm_args: str = Field(
        "",
        description="with engine=vllm: extra command-line flags for vLLM's server, after luodi's own (which they may "
        "override), e.g. '--gpu-memory-utilization 0.8 --dtype bfloat16'",
    )
    vllm_tool_parser: str = Field(
        "hermes",
        description="with engine=vllm: vLLM's --tool-call-parser for tool_choice auto (the model's tool-call format);"
        " empty: only a named tool_choice (guided decoding)",
    )
    vllm_start_timeout_s: float = Field(
        900, gt=0, description="with engine=vllm: seconds to wait for vLLM's server to load the model and answer"
    )
    upstream: str = Field(
        "",
        description="with engine=openai: base URL of the OpenAI-compatible server luodi forwards chat and "
        "completions to, usually ending in /v1 (e.g. http://127.0.0.1:8001/v1 for vLLM or Ollama, "
        "https://api.openai.com/v1); `luodi serve --upstream`",
    )
    upstream_key_env: str = Field(
        "",
        description="with engine=openai: the NAME of the environment variable holding the upstream's API key "
        "(e.g. OPENAI_API_KEY), never the key itself; empty: no key is sent. `luodi serve --upstream-key-env`",
    )
    upstream_model: str = Field(
        "",
        description="with engine=openai: the model luodi asks the upstream for (and serves under that id); "
        "empty: the first model the upstream lists at GET /models. `luodi serve --upstream-model`",
    )
    upstream_timeout_s: float = Field(
        60, gt=0, description="with engine=openai: seconds to wait for the upstream per attempt (connect + read)"
    )
    upstream_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="with engine=openai: retries (with back-off) on connection errors, time-outs, 408, 409, "
        "429 and 5xx answers of the upstream, before luodi answers 502 / 503 / 504",
    )
    # when llama.cpp fails its start-up self-check (a crash or wrong tokens on this CPU): serve on the
    # transformers engine (slower, reported as degraded by /health and `luodi models`) instead of failing
    engine_fallback: bool = True
    # llama.cpp CPU kernels: "" = the level chosen by trying (luodi.engines.ggml_cpu), else a level name
    # (haswell, skylakex, icelake, ...) or a path to a libggml-cpu-*.so
    ggml_cpu: str = ""
    # how long idle ggml worker threads spin before they sleep (0-100, llama.cpp's --poll)
    ggml_poll: int = Field(50, ge=0, le=100)
    max_running: int = 16  # sequences decoded together
    max_queue: int = 64  # waiting requests before 503
    n_ctx: int = 2048  # context window per sequence
    # streamed responses send at most one event per choice per this many ms (tokens that arrive meanwhile are
    # merged): each event costs ~1 ms of CPU in server and client, so a fast stream on a small machine decodes
    # faster with fewer events; 0 sends every token as its own event
    stream_interval_ms: int = 50
    rate_limit_rpm: int = 600  # per API key, requests per minute
    rate_limit_store: Literal["auto", "memory", "database"] = Field(
        "auto",
        description="where rate limits are counted: memory (this server only), database (the store's "
        "rate_limit_windows table: every server on one PostgreSQL store shares each key's limit), auto (the "
        "default: database when LUODI_DATABASE_URL is set, memory for the local SQLite file)",
    )
    threads: int = max(1, os.cpu_count() or 1)
    max_body_mb: float = Field(
        32,
        gt=0,
        description="largest request body the server reads, in MB (2**20 bytes); a larger one is answered 413 "
        "before it is buffered. Multipart file uploads have their own limit, max_upload_mb",
    )
    max_upload_mb: float = Field(
        200,
        gt=0,
        description="largest multipart/form-data request (file uploads to apps and knowledge bases), in MB, "
        "all files together; each file is also at most 50 MB",
    )
    ssl_certfile: str = Field("", description="PEM certificate: `luodi serve` speaks HTTPS when set (--ssl-certfile)")
    ssl_keyfile: str = Field("", description="PEM private key of ssl_certfile unless that file holds it")
    admin_key: str = Field(
        "",
        description="an admin API key the server creates at start-up if the store lacks it (at least 32 "
        "characters; e.g. from a Kubernetes Secret), so a fresh deployment can be managed over HTTP; a revoked one "
        "stays revoked",
    )
    key_cache_seconds: float = Field(
        0.0,
        ge=0,
        le=60,
        description="remember a verified API key this long per process (saves a store lookup, ~1 ms of CPU per "
        "request); a key revoked by another process or replica is then refused only after this delay. 0 (the "
        "default): every request asks the store, so a revocation anywhere applies at once",
    )
    audit_log: bool = Field(
        True,
        description="record every /v1/ call (key, route template, app, status; never bodies) in the store's "
        "append-only audit log, shown to admin keys at GET /v1/audit-log",
    )
    cors_origins: str = Field(
        "",
        description="browser origins allowed to call the API cross-origin, comma-separated "
        "(e.g. 'https://app.example.com,http://localhost:3000'; '*' = any). Empty (the default): CORS is off, "
        "browsers refuse cross-origin calls; the console, served by the server itself, needs none",
    )
    guard_pii: str = Field(
        "",
        description="redact PII from chat and completion requests before the model sees them: 'on' (every entity "
        "type; names need a trained entity-extraction app) or a YAML / JSON file of PII settings (docs/privacy.md); "
        "responses name the removed types in the X-Luodi-PII-Removed header. Empty (the default): off",
    )
    guard_injection: str = Field(
        "",
        description="check chat and completion requests for prompt injection and jailbreaks (heuristics + the "
        "trained prompt-injection app) and replies (streamed ones as they grow) for leaked secrets, the system "
        "prompt and PII: "
        "'on' (block with HTTP 400 guard_injection) or a YAML / JSON file of injection-guard settings "
        "(docs/security-guard.md: mode block | flag, threshold, checks); X-Luodi-Guard / X-Luodi-Guard-Output "
        "headers name the checks that fired. Empty (the default): off",
    )
    encryption_key: str = Field(
        "",
        repr=False,
        description="encryption at rest (docs/encryption.md): a 32-byte key as 64 hex digits or base64; when set, "
        "runs, knowledge-base indexes and the store's message, ticket and chunk texts are written AES-256-GCM "
        "encrypted (files written before stay readable). Empty (the default): stored as plaintext",
    )
    encryption_key_file: str = Field(
        "",
        description="a file holding the encryption key (hex, base64 or 32 raw bytes), e.g. a mounted Kubernetes "
        "Secret; used when encryption_key is empty",
    )
    encryption_new_key: str = Field(
        "",
        repr=False,
        description="only for `luodi keys rotate-encryption`: the key everything is re-encrypted under "
        "(or --new-key-file); afterwards set it as encryption_key",
    )
    # `luodi serve --ray` (luodi.serve.ray_serve, docs/ray.md): the same app as replicas of one Ray Serve deployment
    ray_address: str = Field(
        "",
        description="with `luodi serve --ray`: the Ray cluster to deploy on (e.g. 'auto' or 'ray://head:10001'); "
        "empty (the default): start a local Ray on this machine. `luodi serve --ray --address`",
    )
    ray_min_replicas: int = Field(
        1, ge=0, le=1000,
        description="with `luodi serve --ray`: fewest replicas of the server (0 lets Ray Serve scale to zero); "
        "equal to ray_max_replicas: that fixed number, no autoscaling. `--min-replicas`",
    )
    ray_max_replicas: int = Field(
        1, ge=1, le=1000,
        description="with `luodi serve --ray`: most replicas Ray Serve's autoscaler may start (>= "
        "ray_min_replicas). `--max-replicas`",
    )
    ray_target_ongoing_requests: float = Field(
        2.0, gt=0, le=10000,
        description="with `luodi serve --ray` and max > min replicas: the requests in flight per replica the "
        "autoscaler aims at (more: it adds replicas, fewer: it removes them). `--target-ongoing-requests`",
    )
    ray_max_ongoing_requests: int = Field(
        32, ge=1, le=10000,
        description="with `luodi serve --ray`: requests one replica handles at once; Ray Serve queues the rest in "
        "its proxy (it must exceed ray_target_ongoing_requests)",
    )
    ray_high_throughput: bool = Field(
        True,
        description="with `luodi serve --ray` on a local Ray (no ray_address): start it in Ray Serve's high-"
        "throughput mode (RAY_SERVE_ENABLE_HA_PROXY=1: HAProxy instead of the Python proxy in front of the "
        "replicas, RAY_SERVE_THROUGHPUT_OPTIMIZED=1); a RAY_SERVE_* variable already set wins. A running "
        "cluster keeps the mode it was started with",
    )
    ray_replica_cpus: float = Field(
        1.0, ge=0, le=1024,
        description="with `luodi serve --ray`: CPUs Ray reserves for each replica (0: none reserved, replicas "
        "share the node's cores; the chat engine's own threads are LUODI_THREADS)",
    )

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'luodi.db'}"

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


def security_summary(s: Settings, pii: Any = None, injection: Any = None) -> dict[str, Any]:
    """The security settings a server runs with, secrets left out: `luodi audit`'s server section and the console's
    admin view (GET /v1/security) show the same. `pii` / `injection`: the guards' parsed settings, when on."""

    def shown(cfg: Any) -> dict[str, Any] | None:
        return None if cfg is None else cfg.model_dump(mode="json", exclude={"key", "salt"})

    return {"auth": s.auth, "host": s.host, "rate_limit_rpm": s.rate_limit_rpm, "max_queue": s.max_queue,
            "tls": bool(s.ssl_certfile), "max_body_mb": s.max_body_mb, "max_upload_mb": s.max_upload_mb,
            "cors_origins": s.cors_origin_list or "off", "audit_log": s.audit_log,
            "guard_pii": shown(pii), "guard_injection": shown(injection)}


@lru_cache
def get_settings() -> Settings:
    s = Settings()
    s.home = s.home.expanduser()
    s.home.mkdir(parents=True, exist_ok=True)
    return s


def reset_settings() -> None:
    """Forget cached settings (tests change env vars between cases)."""
    get_settings.cache_clear()
