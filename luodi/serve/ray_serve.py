"""`luodi serve --ray`: the same FastAPI app as `luodi serve` (serve.app.create_app), run as the replicas of one
Ray Serve deployment behind Ray's HTTP proxy.

Why one deployment wrapping the whole app (serve.ingress) instead of re-declaring routes: every route, auth check,
error shape and metric stays the code `luodi serve` runs, so the two cannot drift apart. Each replica builds its own
app at start-up (Ray's late-bound ingress, `__serve_build_asgi_app__`) from the LUODI_* settings the driver hands it
through the runtime environment, so it holds its own ServerState and loads the chat engine on first use, as the
plain server does with preload off. An app with `serve.replicas` in its YAML is predicted by a deployment of its
own (AppPredictor, `App-<name>`), bound to the server's and scaled on its own load; its route stays the server's
(luodi.serve.remote_predictors hands over only the predict call). Ray is an optional extra (`pip install
'luodi[ray]'`): nothing here imports it at module level.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from luodi.errors import ConfigError, LuodiError
from luodi.settings import Settings

APP_NAME = "luodi"  # the Ray Serve application's name (`serve status` shows it)
# Serve's own per-request INFO lines would double luodi's audit log and cost CPU on every request
SERVE_LOGGING = {"log_level": "WARNING", "enable_access_log": False}
DEPLOYMENT_NAME = "LuodiServer"
PREDICTOR_PREFIX = "App-"  # an app's own predictor deployment (serve.replicas): App-<app name>
# environment variables besides LUODI_* that the replicas need to behave as this process does (offline models)
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "LUODI_DATASETS")
MISSING_RAY = ("`luodi serve --ray` needs Ray Serve, which is not installed: pip install 'luodi[ray]' "
               "(or pip install 'ray[serve]')")


def require_ray_serve() -> None:
    """A LuodiError naming the extra to install when Ray Serve is missing. It only looks for the module: importing
    ray.serve reads its RAY_SERVE_* switches, which high_throughput_env must set first."""
    try:
        found = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.serve") is not None
    except (ImportError, ValueError) as e:
        raise LuodiError(f"{MISSING_RAY} ({e})") from e
    if not found:
        raise LuodiError(MISSING_RAY)


def high_throughput_env() -> dict[str, str]:
    """Ray Serve's high-throughput mode (Ray >= 2.55): HAProxy, a C load balancer, takes the HTTP port instead of
    Serve's Python proxy and forwards to replicas that listen themselves (direct ingress). On 2 cores the Python
    proxy costs about as much CPU per request as luodi's own route, so this mode decides whether Ray Serve keeps
    >= 80 % of plain uvicorn's throughput (bench/load.py). Must be in the environment before Ray starts."""
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_HAPROXY_NBTHREAD": str(min(4, os.cpu_count() or 1)),
            # a replica that stops waits this long for an outside load balancer to forget it (30 s by default);
            # here HAProxy is Serve's own and learns of it at once, so Ctrl-C and scale-downs need not wait
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}


class LuodiReplica:
    """One replica: builds the luodi app when Ray starts it (`__serve_build_asgi_app__`, after __init__).

    `preload`: load the chat engine at start-up (else on the first chat request, the default: replicas that
    only serve apps never load it). `apps` and `predictors`: the apps with replicas of their own (serve.replicas)
    and, in the same order, the handles Ray substitutes for their bound AppPredictor deployments."""

    def __init__(self, preload: bool = False, apps: tuple[str, ...] = (), *predictors: Any) -> None:
        self.preload = preload
        self.predictors = dict(zip(apps, predictors, strict=True))

    def __serve_build_asgi_app__(self) -> Any:
        from luodi.serve import remote_predictors
        from luodi.serve.app import create_app
        from luodi.settings import get_settings, reset_settings

        reset_settings()  # read this replica's environment (runtime_env env_vars), not a cached copy
        remote_predictors.attach(self.predictors)
        return create_app(get_settings(), preload=self.preload)


class AppPredictor:
    """One replica of an app's own predictor deployment (the app's `serve.replicas`): loads the app's run on first
    use and micro-batches concurrent calls with the app's serve.batch_size, as the server's routes do in-process.
    The records arrive validated and redacted (guard.pii ran in the server's route)."""

    def __init__(self, app: str) -> None:
        from luodi.settings import reset_settings

        reset_settings()
        self.app = app
        self.batchers: dict[tuple[str, bool], Any] = {}

    async def predict(self, records: list[dict[str, Any]], version: str, explain: bool) -> list[dict[str, Any]]:
        from starlette.concurrency import run_in_threadpool

        from luodi import api
        from luodi.serve.batching import MicroBatcher

        batcher = self.batchers.get((version, explain))
        if batcher is None:
            pred = (await run_in_threadpool(api.load_predictor, self.app, version)).explaining(explain)
            batcher = MicroBatcher(pred.predict_redacted, pred.config.serve.batch_size, pred.config.serve.max_wait_ms)
            self.batchers[(version, explain)] = batcher
        return await batcher.predict(records)

    def requests(self) -> int:
        """Predict calls this replica has answered (for `serve status`-style checks and tests)."""
        return sum(b.requests for b in self.batchers.values())


def replica_env(settings: Settings, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The env vars every replica starts with: this process's LUODI_* (CLI options were written there) and the
    offline switches, with LUODI_HOME pinned to the resolved home so runs, keys and the store are the same."""
    environ = dict(os.environ if environ is None else environ)
    env = {k: v for k, v in environ.items() if k.startswith("LUODI_") or k in FORWARDED_ENV}
    env["LUODI_HOME"] = str(settings.home)
    return env


def deployment_options(settings: Settings) -> dict[str, Any]:
    """Ray Serve deployment options from the ray_* settings; a bad combination is a ConfigError naming the
    setting and the fix (pydantic already checked each value's range)."""
    lo, hi = settings.ray_min_replicas, settings.ray_max_replicas
    if lo > hi:
        raise ConfigError(
            f"ray_min_replicas ({lo}) is above ray_max_replicas ({hi}); lower --min-replicas "
            "(LUODI_RAY_MIN_REPLICAS) or raise --max-replicas (LUODI_RAY_MAX_REPLICAS)",
            param="ray_min_replicas",
        )
    target, most = settings.ray_target_ongoing_requests, settings.ray_max_ongoing_requests
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "max_ongoing_requests": most,
        "ray_actor_options": {
            "num_cpus": settings.ray_replica_cpus,
            "runtime_env": {"env_vars": replica_env(settings)},
        },
    }
    if lo == hi:
        options["num_replicas"] = hi
        return options
    if target >= most:
        raise ConfigError(
            f"ray_target_ongoing_requests ({target:g}) must be below ray_max_ongoing_requests ({most}): a replica "
            "never holds more than max, so the autoscaler would never add one; lower --target-ongoing-requests "
            "or raise LUODI_RAY_MAX_ONGOING_REQUESTS",
            param="ray_target_ongoing_requests",
        )
    options["autoscaling_config"] = {
        "min_replicas": lo,
        "max_replicas": hi,
        "initial_replicas": max(lo, 1),  # answer the first request without waiting for a scale-up
        "target_ongoing_requests": target,
    }
    return options


def predictor_options(app: str, replicas: Any, settings: Settings) -> dict[str, Any]:
    """Ray Serve options of an app's own predictor deployment from its serve.replicas (a ReplicasConfig, checked
    when the app file was read)."""
    options: dict[str, Any] = {
        "name": f"{PREDICTOR_PREFIX}{app}",
        "max_ongoing_requests": replicas.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": replicas.cpus, "runtime_env": {"env_vars": replica_env(settings)}},
    }
    if replicas.min == replicas.max:
        options["num_replicas"] = replicas.max
    else:
        options["autoscaling_config"] = {"min_replicas": replicas.min, "max_replicas": replicas.max,
                                         "initial_replicas": max(replicas.min, 1),
                                         "target_ongoing_requests": replicas.target_ongoing_requests}
    return options


def apps_with_replicas() -> dict[str, Any]:
    """App name -> serve.replicas, for the apps whose served run asks for replicas of their own."""
    from luodi.apps import registry
    from luodi.config import load_app_config

    out = {}
    for app in registry.apps_with_runs():
        try:
            run = registry.get_run(app)
        except LuodiError:  # no run serves by itself (held back): nothing to deploy for it
            continue
        replicas = load_app_config(run.path / "config.yaml").serve.replicas
        if replicas is not None:
            out[app] = replicas
    return out


def build_application(settings: Settings, *, preload: bool = False) -> Any:
    """The Ray Serve application: LuodiReplica wrapped by serve.ingress (late-bound) and serve.deployment, bound
    to one AppPredictor deployment per app with serve.replicas (each scaled on its own load)."""
    require_ray_serve()
    from ray import serve

    options = deployment_options(settings)
    own = apps_with_replicas()
    predictors = [serve.deployment(**predictor_options(app, replicas, settings))(AppPredictor).bind(app)
                  for app, replicas in own.items()]
    deployment = serve.deployment(**options)(serve.ingress()(LuodiReplica))
    return deployment.bind(preload, tuple(own), *predictors)


def deploy(settings: Settings, *, preload: bool = False, timeout_s: float = 300, wait: bool = True) -> str:
    """Start Serve's HTTP proxy on settings.host:port (on the connected Ray cluster), deploy the app and, with
    `wait`, poll until luodi's /health answers there; returns the URL. ray.init must have run (connect())."""
    require_ray_serve()
    from ray import serve

    app = build_application(settings, preload=preload)
    serve.start(http_options={"host": settings.host, "port": settings.port}, logging_config=SERVE_LOGGING)
    try:
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False, logging_config=SERVE_LOGGING)
    except RuntimeError as e:  # a replica failed its start-up (a bad setting, a missing file): Ray says why
        raise LuodiError(f"Ray Serve could not start the luodi replicas: {e}") from e
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{shown}:{settings.port}"
    deadline = time.monotonic() + timeout_s
    while wait:  # serve.run returns once replicas run; the proxy may need a moment more to route to them
        if is_luodi_health(url):
            return url
        if time.monotonic() > deadline:
            raise LuodiError(f"Ray Serve deployed luodi but {url}/health did not answer within {timeout_s:g} s")
        time.sleep(0.2)
    return url


def is_luodi_health(url: str) -> bool:
    """Whether luodi's own /health answers at `url`: not a 404 of the proxy before the routes exist, nor another
    server that took the port meanwhile (Ray's processes bind random free ports of their own)."""
    import httpx

    try:
        r = httpx.get(f"{url}/health", timeout=5)
        body = r.json() if r.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(body, dict) and {"status", "version", "engine_loaded", "auth"} <= body.keys()


def connect(settings: Settings) -> None:
    """ray.init on settings.ray_address (a running cluster) or, when empty, a local Ray on this machine (in the
    high-throughput mode unless ray_high_throughput is off)."""
    address = settings.ray_address or None
    if not address and settings.ray_high_throughput:
        for name, value in high_throughput_env().items():
            os.environ.setdefault(name, value)  # inherited by the Ray processes ray.init starts
    import ray

    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, include_dashboard=False, logging_level="warning")
        else:
            ray.init(include_dashboard=False, logging_level="warning")
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise LuodiError(f"cannot connect to the Ray cluster at {address or 'a new local Ray'}: {e}; "
                         "check --address (LUODI_RAY_ADDRESS), e.g. 'auto' on a cluster node",
                         param="ray_address") from e


def shutdown() -> None:
    """Remove the app and stop Serve and Ray (a local Ray stops; a cluster keeps running without luodi)."""
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def serve_forever(settings: Settings, *, on_ready: Callable[[str], None], preload: bool = False) -> None:
    """`luodi serve --ray`: connect, deploy, call on_ready(url), then block until Ctrl-C (or SIGTERM, as a container
    stop sends) and shut down cleanly."""
    require_ray_serve()
    deployment_options(settings)  # a bad setting stops here, before Ray starts

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    connect(settings)
    signal.signal(signal.SIGTERM, stop)  # after ray.init, which installs its own handler (it skips Serve's shutdown)
    try:
        # through Ray Client (ray://) the proxy runs on the cluster's nodes, not at this machine's host:port
        on_ready(deploy(settings, preload=preload, wait=not settings.ray_address.startswith("ray://")))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        shutdown()
