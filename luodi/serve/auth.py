"""API-key auth for /v1/*: `Authorization: Bearer <key>`, per-key rate limits; LUODI_AUTH=off disables both.

create_app() includes every /v1/ router with `Depends(require_key)` (the check runs once per request, so a
route may depend on it again); key management is included with `require_admin`: a user key gets 403 there.
"""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from luodi.errors import AuthError, LuodiError
from luodi.keys import KeyInfo, verify_key
from luodi.serve.ratelimit import RateLimiter
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


def _limiter(request: Request) -> RateLimiter:
    extra = get_state(request).extra
    if "rate_limiter" not in extra:
        extra["rate_limiter"] = RateLimiter()
    return extra["rate_limiter"]


async def require_key(request: Request) -> KeyInfo | None:
    """FastAPI dependency: the caller's active key (None when auth is off); 401 / 429 otherwise."""
    if hasattr(request.state, _CHECKED):
        return getattr(request.state, _CHECKED)
    settings = get_state(request).settings
    if settings.auth.lower() in ("off", "false", "0", "no"):
        setattr(request.state, _CHECKED, None)
        return None
    info = await run_in_threadpool(verify_key, _bearer(request))
    _limiter(request).check(f"key:{info.id}", info.rate_limit_rpm or settings.rate_limit_rpm)
    setattr(request.state, _CHECKED, info)
    return info


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
