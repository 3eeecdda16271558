"""API-key auth for /v1/*: `Authorization: Bearer <key>`, per-key rate limits; LUODI_AUTH=off disables both.

create_app() includes every /v1/ router with `Depends(require_key)` (the check runs once per request, so a
route may depend on it again); key management is included with `require_admin`: a user key gets 403 there.
A scoped key (luodi.keys.make_scope) is checked here too, in one place: a route group, app or knowledge base
outside its scope is a 403 naming what the key may use. Listing routes narrow their rows with `visible`.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from luodi.errors import AuthError, LuodiError
from luodi.keys import ROUTE_GROUPS, KeyInfo, cached_key, describe_scope, scope_allows, verify_key
from luodi.serve.ratelimit import RateLimiter, StoreRateLimiter, limiter_for
from luodi.serve.state import get_state

_CHECKED = "luodi_key_checked"


class PermissionDenied(LuodiError):
    """A valid key that may not use this route (OpenAI's 403 `permission_error`)."""

    status = 403
    code = "insufficient_permissions"


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if header and scheme.lower() != "bearer":
        raise AuthError("the Authorization header must look like 'Bearer <key>'")
    return token.strip() or request.headers.get("x-api-key", "").strip()


def _limiter(request: Request) -> RateLimiter | StoreRateLimiter:
    state = get_state(request)
    if "rate_limiter" not in state.extra:
        state.extra["rate_limiter"] = limiter_for(state.settings)
    return state.extra["rate_limiter"]


async def require_key(request: Request) -> KeyInfo | None:
    """FastAPI dependency: the caller's active key (None when auth is off); 401 / 429 otherwise."""
    if hasattr(request.state, _CHECKED):
        return getattr(request.state, _CHECKED)
    settings = get_state(request).settings
    if settings.auth.lower() in ("off", "false", "0", "no"):
        setattr(request.state, _CHECKED, None)
        return None
    token = _bearer(request)
    info = cached_key(token) or await run_in_threadpool(verify_key, token)  # LUODI_KEY_CACHE_SECONDS
    limiter, rpm = _limiter(request), info.rate_limit_rpm or settings.rate_limit_rpm
    if limiter.shared:  # a store round trip: off the event loop
        await run_in_threadpool(limiter.check, f"key:{info.id}", rpm)
    else:
        limiter.check(f"key:{info.id}", rpm)
    setattr(request.state, _CHECKED, info)  # set first: the audit log names the key of a refused call too
    if info.scope and not info.admin:
        await _check_scope(request, info)
    return info


def route_group(path: str) -> str | None:
    """The route group (luodi.keys.ROUTE_GROUPS) a /v1 path belongs to; None for /v1/models and admin routes."""
    return next((g for g, p in ROUTE_GROUPS.items() if path == p or path.startswith(p + "/")), None)


async def _target(request: Request, group: str) -> tuple[str | None, str | None]:
    """The app and the knowledge base a call names: in its path, or the `kb` an agent run reads."""
    parts = request.scope.get("path", "").split("/")  # "", "v1", group, name, ...
    named = parts[3] if len(parts) > 3 and parts[3] else None
    if group == "apps":
        return named, None
    if group == "kb":
        return None, named
    if group == "assistant":
        return request.path_params.get("app"), None
    if group == "agents" and request.method == "POST" and request.scope["path"] == "/v1/agents/runs":
        from luodi.agent.assistant.demo import DEMO_KB  # the kb an agent run reads when its body names none

        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = {}  # the route answers the malformed body with its own 400
        kb = body.get("kb") if isinstance(body, dict) else None
        return None, str(kb) if isinstance(kb, str) else DEMO_KB
    return None, None


async def _check_scope(request: Request, info: KeyInfo) -> None:
    group = route_group(request.scope.get("path", ""))
    if group is None:
        return
    app, kb = await _target(request, group)
    if scope_allows(info.scope, group=group, app=app, kb=kb):
        return
    scope = info.scope or {}
    if not scope_allows(scope, group=group):
        what = f"route group '{group}' ({ROUTE_GROUPS[group]}/...)"
    else:
        what = f"app '{app}'" if not scope_allows(scope, app=app) else f"knowledge base '{kb}'"
    raise PermissionDenied(
        f"API key {info.prefix}… ({info.name}) is scoped and may not use {what}; it may use "
        f"{describe_scope(scope)} (and GET /v1/models)"
    )


def visible(request: Request, kind: str, rows: list[Any], field: str = "name") -> list[Any]:
    """Rows of a listing (kind 'app' or 'kb') that the caller's key may use: every row for an unscoped key."""
    info = getattr(request.state, _CHECKED, None)
    if info is None or not info.scope:
        return rows

    def name(row: Any) -> Any:
        return row.get(field) if isinstance(row, dict) else getattr(row, field, row)

    return [r for r in rows if scope_allows(info.scope, **{kind: str(name(r))})]


async def require_admin(request: Request) -> KeyInfo | None:
    """FastAPI dependency for key management and app promotion: an admin key (or auth off); a user key gets 403."""
    info = await require_key(request)
    if info is not None and not info.admin:
        path = request.url.path
        what = ("choosing the version an app serves" if path.endswith("/promote")
                else "reading the audit log" if path.startswith("/v1/audit-log") else "managing API keys")
        raise PermissionDenied(
            f"API key {info.prefix}… ({info.name}) is a user key; {what} needs an admin key "
            "(create one with `luodi keys create NAME --admin`, or use the key `luodi serve` printed)"
        )
    return info
