"""The FastAPI application behind `luodi serve`: one app, one router per area."""

from __future__ import annotations

import importlib

from fastapi import FastAPI

from luodi import __version__
from luodi.serve.state import ServerState
from luodi.settings import Settings, get_settings

# Each module defines `router: fastapi.APIRouter`; the list order is the mount order.
ROUTE_MODULES = ("openai_routes", "keys_routes", "apps_routes", "kb_routes", "agent_routes", "console")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="luodi", version=__version__)
    app.state.luodi = ServerState(settings=settings)
    for name in ROUTE_MODULES:
        try:
            mod = importlib.import_module(f"luodi.serve.{name}")
        except ModuleNotFoundError as e:  # an area not written yet
            if e.name != f"luodi.serve.{name}":
                raise
            continue
        app.include_router(mod.router)

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok", "version": __version__}

    return app
