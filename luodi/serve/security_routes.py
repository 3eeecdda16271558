"""GET /v1/security (admin keys): the security settings this server runs with, and which apps and knowledge bases
redact PII, for the console's admin view. The numbers come from luodi.settings.security_summary, as `luodi audit`'s
server section does; no secret (keys, salts) is ever shown."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from luodi.apps import registry
from luodi.config import load_app_config
from luodi.serve.state import get_state
from luodi.settings import security_summary

router = APIRouter(tags=["security"])


def _apps() -> list[dict[str, Any]]:
    """Each app's served run and its guard (read from the run's config.yaml: nothing is loaded)."""
    out = []
    for name in registry.apps_with_runs():
        try:
            run = registry.get_run(name)
            cfg = load_app_config(run.path / "config.yaml")
        except Exception:  # noqa: BLE001 - a broken run is listed without its settings, not a 500
            out.append({"app": name, "version": None, "guard_pii": None})
            continue
        pii = cfg.guard.pii if cfg.guard is not None else None
        out.append({"app": name, "version": run.version,
                    "guard_pii": None if pii is None else pii.model_dump(mode="json", exclude={"key", "salt"})})
    return out


def _kbs() -> list[dict[str, Any]]:
    from luodi import rag

    return [{"kb": kb["name"], "pii": kb["config"].get("pii")} for kb in rag.list_kbs()]


@router.get("", summary="Security settings: auth, limits, TLS, the PII and injection guards, per-app and per-KB PII")
async def security(request: Request) -> dict[str, Any]:
    state = get_state(request)
    injection = state.extra.get("injection_guard")
    server = security_summary(state.settings, state.extra.get("pii_guard"), getattr(injection, "cfg", None))
    return {"server": server, "apps": await run_in_threadpool(_apps), "kbs": await run_in_threadpool(_kbs)}
