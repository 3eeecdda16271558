"""LLM commands: serve, demo, chat, generate, embed, models. Thin faces of luodi.llm (keys: cli/keys.py)."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from luodi import keys as keys_service
from luodi import llm
from luodi.cli.common import fail as _fail
from luodi.engines import choose_backend, engine_status, get_engine
from luodi.errors import LuodiError
from luodi.llm.openai_types import ChatCompletionRequest, CompletionRequest
from luodi.settings import get_settings, reset_settings

console = Console()
err_console = Console(stderr=True)

def _apply_overrides(**env: str | int | None) -> None:
    """Set LUODI_* env vars for this process (and the server it starts), then re-read the settings."""
    for name, value in env.items():
        if value is not None:
            os.environ[f"LUODI_{name.upper()}"] = str(value)
    reset_settings()


# ------------------------------------------------------------------------------------------ serving
def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def print_banner(url: str, key: str | None, model: str, auth_on: bool = False) -> None:
    """URL, key and ready-to-paste examples (`auth_on` without a key: --no-key, the examples name a placeholder)."""
    key = key or ("<your key>" if auth_on else None)
    auth = f' -H "Authorization: Bearer {key}"' if key else ""
    console.rule("[bold]luodi is serving[/bold]")
    console.print(f"URL        [bold cyan]{url}[/bold cyan]   (console: {url}/ , API docs: {url}/docs)")
    console.print(f"model      {model}")
    if auth_on and key == "<your key>":
        console.print("API key    required (--no-key: none created; `luodi keys create NAME` makes one)")
    elif key:
        console.print(
            f"API key    [bold green]{key}[/bold green]   (admin, shown once; create more: luodi keys create NAME)"
        )
    else:
        console.print("API key    none needed (LUODI_AUTH=off)")
    console.print("\n[bold]curl[/bold]", highlight=False)
    console.print(
        f"curl {url}/v1/chat/completions{auth} -H 'Content-Type: application/json' \\\n"
        f'  -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\'',
        highlight=False,
        markup=False,
    )
    console.print("\n[bold]Python (openai)[/bold]", highlight=False)
    console.print(
        "from openai import OpenAI\n"
        f'client = OpenAI(base_url="{url}/v1", api_key="{key or "none"}")\n'
        f'r = client.chat.completions.create(model="{model}", '
        'messages=[{"role": "user", "content": "Hello!"}])\n'
        "print(r.choices[0].message.content)",
        highlight=False,
        markup=False,
    )
    console.rule()


def run_server(host: str, port: int, *, new_key: bool = True, key_name: str = "luodi-serve",
               use_ray: bool = False) -> None:
    """Start the HTTP server in the foreground (Ctrl-C stops it); `use_ray`: the same app on Ray Serve
    (luodi.serve.ray_serve, the LUODI_RAY_* settings)."""
    import uvicorn

    from luodi.serve.app import create_app
    from luodi.serve.tls import tls_options

    settings = get_settings()
    tls = tls_options(settings.ssl_certfile, settings.ssl_keyfile)
    if use_ray:
        from luodi.serve import ray_serve

        ray_serve.require_ray_serve()  # not installed: stop naming the extra, before any key is made
        ray_serve.deployment_options(settings)  # a bad replica setting stops here, naming it
        if tls:
            raise LuodiError("--ray serves plain HTTP through Ray Serve's proxy; drop --ssl-certfile and put TLS "
                             "in front of it (a load balancer or ingress)", param="ssl_certfile")
        # build the app once here: a bad setting (a guard file, ...) stops with luodi's message, where a replica
        # failing the same check reaches this process only as Ray's "failed to update the deployments"
        create_app(settings, preload=False)
    if not (use_ray and settings.ray_address) and not _port_free(host, port):
        raise LuodiError(f"port {port} on {host} is already in use; pick another with --port", param="port")
    model = settings.chat_model
    if choose_backend(settings.engine) in ("openai", "vllm"):  # a bad upstream setting, a vLLM that cannot start:
        model = get_engine().model_id  # stop here, naming the setting
    key = None
    auth_on = settings.auth.lower() not in ("off", "false", "0", "no")
    if settings.admin_key:  # checked here, before listening: a bad one stops the start naming the setting
        keys_service.ensure_admin_key(settings.admin_key)
        new_key = False  # the deployment brings its admin key
    if auth_on and new_key:
        key = keys_service.create_key(key_name, admin=True).key  # admin: it may manage keys too
    if use_ray:
        ray_serve.serve_forever(settings, on_ready=lambda url: print_banner(url, key, model, auth_on))
        return
    app = create_app(settings)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print_banner(f"{'https' if tls else 'http'}://{shown_host}:{port}", key, model, auth_on)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5, **tls)


HostOpt = Annotated[str | None, typer.Option(help="interface to listen on (default LUODI_HOST)")]
PortOpt = Annotated[int | None, typer.Option(help="port (default LUODI_PORT)")]


def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    model: Annotated[
        str | None, typer.Option(help="chat model: bundled:<name>, .gguf file or HF dir")
    ] = None,
    engine: Annotated[str | None, typer.Option(
        help="auto (vllm on a CUDA GPU with vLLM installed, else llamacpp) | llamacpp | transformers | openai (needs "
        "--upstream) | vllm")] = None,
    embed_model: Annotated[str | None, typer.Option(help="embedding model")] = None,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for decoding (default LUODI_THREADS)")
    ] = None,
    upstream: Annotated[str | None, typer.Option(
        help="with --engine openai: the OpenAI-compatible server's base URL, e.g. http://127.0.0.1:8001/v1 "
        "(LUODI_UPSTREAM)")] = None,
    upstream_key_env: Annotated[str | None, typer.Option(
        help="with --engine openai: NAME of the env var holding the upstream's key (LUODI_UPSTREAM_KEY_ENV)")] = None,
    upstream_model: Annotated[str | None, typer.Option(
        help="with --engine openai: the upstream model (default: its first; LUODI_UPSTREAM_MODEL)")] = None,
    new_key: Annotated[bool, typer.Option("--key/--no-key", help="create and print a fresh API key")] = True,
    ssl_certfile: Annotated[str | None, typer.Option(help="PEM certificate: serve HTTPS (LUODI_SSL_CERTFILE)")] = None,
    ssl_keyfile: Annotated[str | None, typer.Option(help="its PEM private key (LUODI_SSL_KEYFILE)")] = None,
    use_ray: Annotated[bool, typer.Option("--ray", help="serve the same app on Ray Serve (needs the ray extra; "
                                          "docs/ray.md)")] = False,
    address: Annotated[str | None, typer.Option(
        help="with --ray: the Ray cluster, e.g. 'auto' (default: a local Ray; LUODI_RAY_ADDRESS)")] = None,
    min_replicas: Annotated[int | None, typer.Option(
        min=0, help="with --ray: fewest replicas (LUODI_RAY_MIN_REPLICAS, default 1)")] = None,
    max_replicas: Annotated[int | None, typer.Option(
        min=1, help="with --ray: most replicas; above --min-replicas: autoscaling (LUODI_RAY_MAX_REPLICAS)")] = None,
    target_ongoing_requests: Annotated[float | None, typer.Option(
        min=0.001, help="with --ray: requests in flight per replica the autoscaler aims at "
        "(LUODI_RAY_TARGET_ONGOING_REQUESTS, default 2)")] = None,
) -> None:
    """Serve the OpenAI-compatible API (and the console) on HOST:PORT, over HTTPS with --ssl-certfile, or on Ray
    Serve with --ray."""
    _apply_overrides(
        host=host, port=port, chat_model=model, engine=engine, embed_model=embed_model, threads=threads,
        ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, upstream=upstream, upstream_key_env=upstream_key_env,
        upstream_model=upstream_model, ray_address=address, ray_min_replicas=min_replicas,
        ray_max_replicas=max_replicas, ray_target_ongoing_requests=target_ongoing_requests,
    )
    try:
        s = get_settings()
    except ValidationError as e:  # a bad LUODI_* value (e.g. LUODI_RAY_MAX_REPLICAS=0): name it, no traceback
        err = e.errors()[0]
        raise _fail(LuodiError(f"LUODI_{str(err['loc'][0]).upper()}: {err['msg']} (got {err.get('input')!r})",
                               param=str(err["loc"][0]))) from e
    try:
        run_server(s.host, s.port, new_key=new_key, use_ray=use_ray)
    except LuodiError as e:
        raise _fail(e) from e


def demo_steps() -> list[tuple[str, Callable[[], object]]]:
    """What `luodi demo` prepares before serving, in order: the demo apps, then the customer-service assistant."""
    from luodi import api
    from luodi.agent import assistant

    def log(message: str) -> None:
        console.print(message, highlight=False)

    return [
        ("demo apps", lambda: api.ensure_demo_apps(progress=True, log=log)),
        ("customer-service assistant", assistant.ensure_demo),
    ]


def run_demo_steps(steps: list[tuple[str, Callable[[], object]]] | None = None) -> list[str]:
    """Run each step; one that fails is reported and skipped, so the demo server still starts. Returns the
    labels of the steps that finished."""
    done = []
    for label, step in demo_steps() if steps is None else steps:
        console.print(f"[bold]preparing {label}[/bold]")
        try:
            step()
            done.append(label)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - a failed extra must not stop the demo server
            err_console.print(f"[yellow]skipped {label}: {e}[/yellow]", highlight=False)
    return done


def demo(
    port: PortOpt = None,
    prepare: Annotated[bool, typer.Option("--prepare/--no-prepare", help="train/prepare demo apps")] = True,
) -> None:
    """The whole platform on 127.0.0.1 with the bundled models: demo apps, assistant, API and console."""
    _apply_overrides(port=port)
    if prepare:
        run_demo_steps()
    s = get_settings()
    try:
        run_server("127.0.0.1", s.port, key_name="luodi-demo")
    except LuodiError as e:
        raise _fail(e) from e


# ------------------------------------------------------------------------------------------ generation
def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@dataclass
class Reply:
    """A finished reply as the CLI shows it."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


def _reply(request: ChatCompletionRequest | CompletionRequest, on_text: Callable[[str], None] | None) -> Reply:
    """Run one request through the LLM service on the shared engine, streaming its text to `on_text`."""

    async def run() -> Reply:
        service = llm.chat_completion if isinstance(request, ChatCompletionRequest) else llm.text_completion
        events = await service(get_engine(), request)
        parts: list[str] = []
        finish, usage = None, None
        async with aclosing(events):
            async for event in events:
                data = event.dump()  # the JSON the HTTP API sends (an upstream's events too: the openai engine)
                usage = data.get("usage") or usage
                for c in data.get("choices") or []:
                    piece = (c.get("delta") or {}).get("content") if isinstance(request, ChatCompletionRequest) \
                        else c.get("text")
                    if piece:
                        parts.append(piece)
                        if on_text is not None:
                            on_text(piece)
                    finish = c.get("finish_reason") or finish
        usage = usage or {}
        return Reply("".join(parts), finish, int(usage.get("prompt_tokens") or 0),
                     int(usage.get("completion_tokens") or 0))

    return llm.run_sync(run())


def _messages(system: str | None, turns: list[dict[str, str]]) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + turns


def generate_text(
    prompt: str,
    *,
    max_tokens: int | None = 256,
    temperature: float | None = None,
    seed: int | None = None,
    json_mode: bool = False,
    schema: dict | None = None,
    raw: bool = False,
    system: str | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Reply:
    """One prompt -> one reply with the local engine (chat template unless raw)."""
    fields = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed, "stream": True,
              "stream_options": {"include_usage": True}}
    if raw:
        return _reply(CompletionRequest(prompt=prompt, **fields), on_text)
    rf = None
    if schema is not None:
        rf = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    elif json_mode:
        rf = {"type": "json_object"}
    messages = _messages(system, [{"role": "user", "content": prompt}])
    return _reply(ChatCompletionRequest(messages=messages, response_format=rf, **fields), on_text)


def generate(
    prompt: Annotated[str, typer.Argument(help="what to ask the model")],
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", min=1)] = 256,
    temperature: Annotated[float | None, typer.Option("--temperature", "-t", help="0 = greedy")] = None,
    seed: Annotated[int | None, typer.Option(help="fixed seed = reproducible output")] = None,
    json_mode: Annotated[bool, typer.Option("--json", help="constrain the output to a JSON object")] = False,
    schema: Annotated[str | None, typer.Option(help="JSON Schema file the output must follow")] = None,
    raw: Annotated[bool, typer.Option(help="plain text completion, no chat template")] = False,
    system: Annotated[str | None, typer.Option(help="system prompt")] = None,
    model: Annotated[str | None, typer.Option(help="chat model (default LUODI_CHAT_MODEL)")] = None,
) -> None:
    """Generate a reply to PROMPT with the local model, streamed to stdout."""
    _apply_overrides(chat_model=model)
    try:
        sch = None
        if schema:
            try:
                with open(schema, encoding="utf-8") as f:
                    sch = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise LuodiError(f"--schema {schema}: cannot read a JSON Schema from it ({e})") from e
        g = generate_text(
            prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            json_mode=json_mode,
            schema=sch,
            raw=raw,
            system=system,
            on_text=_write,
        )
    except LuodiError as e:
        raise _fail(e) from e
    _write("\n")
    if g.finish_reason == "length":
        err_console.print(
            f"[yellow]stopped at --max-tokens {max_tokens}; raise it for a complete answer[/yellow]"
        )
    usage = f"{g.prompt_tokens} prompt + {g.completion_tokens} generated tokens"
    err_console.print(f"[dim]{usage}, finish: {g.finish_reason}[/dim]")


def chat(
    system: Annotated[str | None, typer.Option(help="system prompt")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", min=1)] = 512,
    temperature: Annotated[float | None, typer.Option("--temperature", "-t")] = None,
    model: Annotated[str | None, typer.Option(help="chat model (default LUODI_CHAT_MODEL)")] = None,
) -> None:
    """Chat with the local model in the terminal. Commands: /reset, /system <text>, /exit."""
    _apply_overrides(chat_model=model)
    try:
        get_engine()  # load it (and fail) before the first question
    except LuodiError as e:
        raise _fail(e) from e
    tty = sys.stdin.isatty()
    history: list[dict[str, str]] = []
    if tty:
        console.print(
            "[dim]luodi chat — /reset clears the conversation, /system <text> sets the system "
            "prompt, /exit quits[/dim]"
        )
    while True:
        if tty:
            console.print("[bold cyan]you>[/bold cyan] ", end="")
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            history.clear()
            console.print("[dim](conversation cleared)[/dim]")
            continue
        if line.startswith("/system"):
            system = line[len("/system") :].strip() or None
            history.clear()
            console.print(
                f"[dim](system prompt {'set' if system else 'cleared'}; conversation cleared)[/dim]"
            )
            continue
        if line.startswith("/"):
            console.print("[yellow]unknown command; use /reset, /system <text> or /exit[/yellow]")
            continue
        history.append({"role": "user", "content": line})
        request = ChatCompletionRequest(messages=_messages(system, history), max_tokens=max_tokens,
                                        temperature=temperature, stream=True, stream_options={"include_usage": True})
        console.print("[bold magenta]model>[/bold magenta] ", end="")
        try:
            reply = _reply(request, _write)
        except LuodiError as e:
            history.pop()
            err_console.print(f"[red]{escape(e.message)}[/red] — use /reset to start over", highlight=False)
            continue
        except KeyboardInterrupt:
            _write("\n")
            history.pop()
            continue
        _write("\n")
        history.append({"role": "assistant", "content": reply.text})


def embed(
    texts: Annotated[list[str], typer.Argument(help="one or more texts")],
    as_json: Annotated[bool, typer.Option("--json", help="print the full vectors as JSON")] = False,
) -> None:
    """Embed texts with the encoder (normalized vectors)."""
    from luodi.embeddings import get_encoder

    try:
        enc = get_encoder(get_settings().embed_model)
    except LuodiError as e:
        raise _fail(e) from e
    vecs = enc.encode(texts)
    if as_json:
        _write(
            json.dumps(
                {
                    "model": get_settings().embed_model,
                    "dim": int(vecs.shape[1]),
                    "embeddings": [[round(float(x), 6) for x in v] for v in vecs],
                }
            )
            + "\n"
        )
        return
    for t, v in zip(texts, vecs, strict=True):
        head = ", ".join(f"{x:+.4f}" for x in v[:6])
        console.print(f"{t[:40]!r:44} dim={len(v)} [{head}, …]", highlight=False)
    if len(texts) > 1:
        sims = vecs @ vecs.T
        console.print("cosine similarity:")
        for i in range(len(texts)):
            console.print("  " + " ".join(f"{sims[i, j]:.3f}" for j in range(len(texts))))


def models(
    engine: Annotated[bool, typer.Option("--engine/--no-engine", help="also load the chat engine and show "
                                         "what serves: backend, CPU kernels, self-check")] = True,
) -> None:
    """Bundled and registered models, and the chat engine that serves."""
    from luodi.models import list_bundled
    from luodi.serve.openai_routes import registered_models

    s = get_settings()
    t = Table(title="models")
    for col in ("id", "role", "available", "default for"):
        t.add_column(col)
    for m in list_bundled():
        default = "chat" if m["id"] == s.chat_model else "embeddings" if m["id"] == s.embed_model else ""
        t.add_row(m["id"], m["role"], "yes" if m["available"] else "no (package missing)", default)
    for m in registered_models():
        t.add_row(m["id"], str(m.get("role", m.get("task", ""))), "yes", "registered")
    console.print(t)
    if engine:
        _print_engine()


def _print_engine() -> None:
    """Load the chat engine (llama.cpp's self-check included) and say what serves and on which CPU kernels."""
    st = engine_status(get_engine())
    t = Table(title="chat engine")
    t.add_column("")
    t.add_column("")
    t.add_row("backend", f"{st['backend']}" + (" [red](DEGRADED)[/red]" if st["degraded"] else ""))
    t.add_row("model", st["model"])
    if st.get("upstream"):
        t.add_row("upstream", st["upstream"])
    if st["degraded"]:
        t.add_row("why", st["reason"])
    if st.get("ggml_cpu_variant") is not None or st.get("cpu_features"):
        t.add_row("ggml CPU kernels", str(st.get("ggml_cpu_variant") or "built into the library"))
        t.add_row("CPU features", " ".join(st.get("cpu_features", [])))
    if "self_check_seconds" in st:
        t.add_row("self-check", f"passed in {st['self_check_seconds']:.2f} s")
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(demo)
    app.command()(chat)
    app.command()(generate)
    app.command()(embed)
    app.command()(models)
