"""The FastAPI application behind `luodi serve`: one app, one router per area."""

from __future__ import annotations

import logging
import math
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from luodi import __version__
from luodi.engines import engine_status
from luodi.errors import LuodiError
from luodi.keys import ensure_admin_key
from luodi.llm import ensure_engine
from luodi.llm.openai_types import ErrorBody, ErrorDetail
from luodi.monitor import drift_scores, redact_logged_inputs
from luodi.serve import (
    access_log,
    agent_routes,
    apps_routes,
    audit_routes,
    console,
    kb_routes,
    keys_routes,
    monitor_routes,
    openai_routes,
    security_routes,
)
from luodi.serve.auth import require_admin, require_key
from luodi.serve.limits import BodyLimitMiddleware, error_responses
from luodi.serve.metrics import MetricsMiddleware, ServerMetrics
from luodi.serve.state import ServerState
from luodi.settings import Settings, get_settings
from luodi.store import init_db

log = logging.getLogger("luodi.serve")

# Routes that speak the OpenAI protocol answer request validation errors with 400 (as OpenAI does);
# every other route keeps FastAPI's 422, both naming the offending field.
OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models")

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_body(message: str, status: int, *, param: str | None = None, code: str | None = None) -> dict:
    """The OpenAI error shape every luodi error uses (llm.openai_types.ErrorBody)."""
    etype = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    detail = ErrorDetail(message=message, type=etype, param=param, code=code)
    return ErrorBody(error=detail).dump()


def _retry_headers(exc: Exception, status: int) -> dict[str, str]:
    if status in (429, 503):
        return {"Retry-After": str(int(getattr(exc, "retry_after", 1) or 1))}
    return {}


def _loc(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


_HINTS = {
    "missing": "add it to the request",
    "json_invalid": "send a valid JSON body with 'Content-Type: application/json'",
    "extra_forbidden": "remove it",
}


def describe_validation_errors(errors: list[dict]) -> tuple[str, str | None]:
    """One message naming every offending field, what was expected and the fix; plus the first field."""
    msgs, first = [], None
    for e in errors[:5]:
        field = _loc(e.get("loc", ()))
        if e.get("type") == "json_invalid":
            msgs.append(
                f"the request body is not valid JSON ({e.get('ctx', {}).get('error', e.get('msg'))}); "
                + _HINTS["json_invalid"]
            )
            first = first or "body"
            continue
        if e.get("type") == "model_attributes_type" and field == "body":
            msgs.append("the request body must be a JSON object; " + _HINTS["json_invalid"])
            first = first or "body"
            continue
        first = first or field
        hint = _HINTS.get(e.get("type", ""), "")
        got = "" if e.get("type") == "missing" else f" (got {e.get('input')!r:.80})"
        msgs.append(f"field '{field}': {e.get('msg', 'invalid value')}{got}" + (f"; {hint}" if hint else ""))
    if len(errors) > 5:
        msgs.append(f"and {len(errors) - 5} more")
    return "; ".join(msgs), first


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LuodiError)
    async def _luodi_error(request: Request, exc: LuodiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.message, exc.status, param=exc.param, code=exc.code),
            status_code=exc.status,
            headers=_retry_headers(exc, exc.status),
        )

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status = 400 if request.url.path in OPENAI_PATHS else 422
        errors = list(exc.errors())
        message, param = describe_validation_errors(errors)
        body = error_body(message, status, param=param, code="invalid_value")
        body["detail"] = jsonable_errors(errors)  # FastAPI's usual list, for clients that read it
        return JSONResponse(body, status_code=status)

    @app.exception_handler(ValidationError)
    async def _model_invalid(request: Request, exc: ValidationError) -> JSONResponse:
        errors = list(exc.errors())
        message, param = describe_validation_errors(errors)
        body = error_body(message, 422, param=param, code="invalid_value")
        body["detail"] = jsonable_errors(errors)
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}; the API is described at /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs for the methods"
        return JSONResponse(
            error_body(message, exc.status_code, code=None),
            status_code=exc.status_code,
            headers={**(exc.headers or {}), **_retry_headers(exc, exc.status_code)},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(
                f"internal error ({type(exc).__name__}); see the server log", 500, code="internal_error"
            ),
            status_code=500,
        )


def jsonable_errors(errors: list[dict]) -> list[dict]:
    """Validation errors as JSON: the offending input echoed, with 1e400 / NaN as strings (JSON has no such
    numbers, and the response must not fail on them)."""
    from fastapi.encoders import jsonable_encoder

    def finite(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return repr(v)
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [finite(x) for x in v]
        return v

    return finite(
        jsonable_encoder([{k: v for k, v in e.items() if k in ("type", "loc", "msg", "input")} for e in errors])
    )


@asynccontextmanager
async def _lifespan(app: FastAPI):
    state: ServerState = app.state.luodi
    init_db(state.settings.db_url)
    if state.settings.admin_key:
        ensure_admin_key(state.settings.admin_key)
    if app.state.preload:
        try:
            ensure_engine(state)
        except Exception as e:  # noqa: BLE001 - serve the other routes; chat routes retry and answer 503
            log.warning("chat engine not loaded at start-up: %s", e)
    yield  # the chat engine is shared (luodi.engines.get_engine); close_engines() closes it at process exit
    writer = state.extra.get("audit_writer")
    if writer is not None:
        writer.close()  # the last queued audit rows


def _include_routes(app: FastAPI) -> None:
    """Every area's routes, where they are mounted and who may call them: every /v1/ route needs a key
    (an admin key for key management), the console's page and files need none."""
    key, admin = [Depends(require_key)], [Depends(require_admin)]
    app.include_router(openai_routes.router, dependencies=key)  # /v1/chat/completions, /v1/models, ...
    app.include_router(keys_routes.router, prefix="/v1/keys", dependencies=admin)
    app.include_router(access_log.router, prefix="/v1/audit-log", dependencies=admin)
    app.include_router(security_routes.router, prefix="/v1/security", dependencies=admin)
    app.include_router(apps_routes.router, dependencies=key)  # /v1/apps/...
    app.include_router(audit_routes.router, prefix="/v1/apps", dependencies=key)  # /v1/apps/{name}/audit
    app.include_router(monitor_routes.router, prefix="/v1/apps", dependencies=key)  # /monitor, /feedback
    app.include_router(kb_routes.router, prefix="/v1/kb", dependencies=key)
    app.include_router(agent_routes.agents, prefix="/v1/agents", dependencies=key)
    app.include_router(agent_routes.assistants, prefix="/v1/assistants", dependencies=key)
    app.include_router(agent_routes.tickets, prefix="/v1/tickets", dependencies=key)
    app.include_router(console.router)  # / and /static/...


def create_app(settings: Settings | None = None, *, preload: bool = True) -> FastAPI:
    """Build the app; `preload` loads the chat engine at start-up (else on first use)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="luodi",
        version=__version__,
        lifespan=_lifespan,
        description="OpenAI-compatible LLM server, apps, knowledge bases and agents.",
        responses=error_responses(413),  # every route: BodyLimitMiddleware
    )
    app.state.luodi = ServerState(settings=settings)
    app.state.preload = preload
    metrics = ServerMetrics()
    app.state.metrics = metrics
    app.state.luodi.extra["metrics"] = metrics
    metrics.bind_drift(drift_scores)  # luodi_app_drift{app,feature}, recomputed at most once a minute
    redact_logged_inputs(None)  # this server's guard (below) decides; the prediction log is per process
    if settings.guard_pii:  # LUODI_GUARD_PII: checked here, so a bad setting stops the start-up
        from luodi.privacy.guard import check_ready, guard_config

        guard = guard_config(settings.guard_pii)
        if guard is not None:
            check_ready(guard)
            app.state.luodi.extra["pii_guard"] = guard
            from luodi.privacy.app_guard import input_guard  # the prediction log's inputs: redacted too

            redact_logged_inputs(lambda records, g=input_guard(guard): g(records)[0])
    if settings.guard_injection:  # LUODI_GUARD_INJECTION: a bad setting or a missing classifier stops the start-up
        from luodi.privacy.injection_server import guard_from_setting

        injection_guard = guard_from_setting(settings.guard_injection)
        if injection_guard is not None:
            app.state.luodi.extra["injection_guard"] = injection_guard
    _install_error_handlers(app)
    # innermost first: body limits inside metrics (413s are counted)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=int(settings.max_body_mb * 2**20),
        upload_bytes=int(settings.max_upload_mb * 2**20),
    )
    if settings.audit_log:  # inside metrics, outside the body limit: refused bodies are logged too
        writer = access_log.AuditWriter(settings.db_url)
        app.state.luodi.extra["audit_writer"] = writer
        app.add_middleware(access_log.AccessLogMiddleware, writer=writer)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cors_origin_list:  # outermost: preflights and error responses carry the CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["*"],  # Authorization, Content-Type, X-Api-Key
            allow_credentials=False,  # API keys travel in headers, never in cookies
        )
    _include_routes(app)

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        st: ServerState = app.state.luodi
        engine = engine_status(st.engine)
        return {
            "status": "degraded" if engine["degraded"] else "ok",
            "version": __version__,
            "engine_loaded": st.engine is not None,
            "engine": engine,
            "chat_model": settings.chat_model,
            "auth": settings.auth,
        }

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app
