"""Apps predicted on replicas of their own (an app's `serve.replicas` under `luodi serve --ray`): the deployment
handles a server replica was given, and the one call the app routes make instead of predicting in-process.

Validation, guard.pii, traffic splits and the prediction log stay in the server's routes, so an app behaves the
same whether its model runs in-process or on its own replicas; only `predict` moves. Nothing here imports Ray.
"""

from __future__ import annotations

from typing import Any

from luodi.errors import LuodiError

_HANDLES: dict[str, Any] = {}


def attach(handles: dict[str, Any]) -> None:
    """Set this process's handles, app name -> the handle of its predictor deployment (luodi.serve.ray_serve)."""
    _HANDLES.clear()
    _HANDLES.update(handles)


def handle_for(app: str) -> Any | None:
    return _HANDLES.get(app)


async def predict(handle: Any, records: list[dict[str, Any]], version: str, explain: bool) -> list[dict[str, Any]]:
    """The app's predictions from its own replicas; a luodi error raised there (a bad value, a tampered run) is
    re-raised here as itself, so the client gets the same status and message as in-process."""
    try:
        return await handle.predict.remote(records, version, explain)
    except Exception as e:
        cause = getattr(e, "cause", None)  # Ray wraps an exception raised in a replica; .cause is the original
        if isinstance(cause, LuodiError):
            raise cause from None
        raise
