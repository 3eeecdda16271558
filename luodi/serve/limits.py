"""Request body size limits: every request's body is counted while it streams in, and one larger than
LUODI_MAX_BODY_MB (LUODI_MAX_UPLOAD_MB for multipart file uploads) is answered 413 naming the limit and the
setting that raises it.

An ASGI middleware rather than a route dependency: routes read bodies themselves (request.json(), form
parsing), so the only place that sees every byte before it is buffered is the `receive` channel. A declared
Content-Length over the limit is refused before anything is read; a chunked body, or one whose Content-Length
understates it, is cut off at the first chunk that crosses the limit, so at most limit + one chunk is held.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from luodi.llm.openai_types import ErrorBody, ErrorDetail


class BodyTooLarge(Exception):
    """Raised into the app from `receive` when the body crosses the limit (the middleware answers 413)."""


_WHY = {
    400: "a bad value or file (OpenAI error shape; `param` names the field)",
    404: "no such app / knowledge base",
    413: "the request body is over LUODI_MAX_BODY_MB (LUODI_MAX_UPLOAD_MB for uploads), or a file over 50 MB",
    415: "an unsupported file type",
}


def error_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI `responses` for error statuses a route answers, in luodi's error shape."""
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in codes}


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:g} MB"


class BodyLimitMiddleware:
    """413 for request bodies over `max_bytes` (`upload_bytes` for multipart/form-data)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_bytes = upload_bytes

    def _limit(self, scope: Scope) -> tuple[int, str]:
        ctype = dict(scope.get("headers") or ()).get(b"content-type", b"")
        if ctype.lower().startswith(b"multipart/form-data"):
            return self.upload_bytes, "LUODI_MAX_UPLOAD_MB"
        return self.max_bytes, "LUODI_MAX_BODY_MB"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit(scope)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit, setting, f"declares {_mb(int(declared))}")
            return

        seen = 0
        over = False
        started = False

        async def counted_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:  # the app's own answer to the cut-off body (e.g. a 400) is replaced by the 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(send, limit, setting, "is larger")

    @staticmethod
    async def _refuse(send: Send, limit: int, setting: str, how: str) -> None:
        message = (
            f"the request body {how} than the server's limit of {_mb(limit)}"
            if how == "is larger"
            else f"the request body {how}, over the server's limit of {_mb(limit)}"
        )
        message += f"; send less, or raise the limit with {setting} (in MB) when starting the server"
        detail = ErrorDetail(message=message, type="invalid_request_error", param=None, code="request_too_large")
        body = json.dumps(ErrorBody(error=detail).dump()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
