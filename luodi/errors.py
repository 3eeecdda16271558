"""Errors users see: each names what was wrong and how to fix it."""

from __future__ import annotations


class LuodiError(Exception):
    """Base error; `status` is the HTTP status the server answers with."""

    status: int = 400
    code: str = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if status is not None:
            self.status = status


class BadRequest(LuodiError):
    status = 400


class NotFound(LuodiError):
    status = 404
    code = "not_found"


class AuthError(LuodiError):
    status = 401
    code = "invalid_api_key"


class Conflict(LuodiError):
    status = 409
    code = "conflict"


class RateLimited(LuodiError):
    status = 429
    code = "rate_limit_exceeded"


class Overloaded(LuodiError):
    status = 503
    code = "server_overloaded"


class ConfigError(LuodiError):
    status = 422
    code = "invalid_config"


class UpstreamError(LuodiError):
    """The upstream server the `openai` engine forwards to failed or cannot be reached (luodi.engines.upstream);
    the message names the upstream and the setting to check."""

    status = 502
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
