"""HTTP face of `luodi audit` (luodi.audit.report.audit): run an audit of an app's run, and read its page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from luodi import crypto
from luodi.apps import registry
from luodi.config import Strict
from luodi.errors import NotFound

router = APIRouter()


class AuditRequest(Strict):
    version: str | None = Field(None, description="the run to audit (default: the one the app serves)")
    areas: list[str] | None = Field(None, description="fairness, robustness, explanations (default: all)")
    sensitive: list[str] | None = Field(None, description="columns to check fairness on (default: evaluate.fairness)")
    attack: str = Field("pgd", description="fgsm | pgd (robustness)")
    eps: float | None = Field(None, gt=0, description="perturbation size (default: the area's own)")


@router.post("/{name}/audit", summary="Audit a run: fairness, robustness, explanations, integrity (writes audit.html)")
async def run_audit(name: str, body: AuditRequest) -> dict[str, Any]:
    from luodi.audit.report import audit

    options = body.model_dump(exclude={"version", "areas"}, exclude_none=True)
    res = await run_in_threadpool(lambda: audit(name, body.version, areas=body.areas, **options))
    res.pop("html", None)  # a path on the server: the page is at audit_url
    res["audit_url"] = f"/v1/apps/{name}/runs/{res['version']}/audit"
    return res


@router.get("/{name}/runs/{version}/audit", response_class=HTMLResponse, summary="A run's audit.html")
async def audit_page(name: str, version: str) -> HTMLResponse:
    from luodi.audit.report import AUDIT_HTML

    run = await run_in_threadpool(registry.get_run, name, version)
    page = run.path / AUDIT_HTML
    if not page.exists():
        raise NotFound(f"run {name} {version} has not been audited: `luodi audit {name} --version {version}` "
                       f"or POST /v1/apps/{name}/audit", param="version")
    return HTMLResponse(crypto.read_text(page))
