"""API key management over HTTP: GET/POST /v1/keys, DELETE /v1/keys/{id} (same functions as `luodi keys`).

create_app mounts the router at /v1/keys behind `require_admin`: a user key is answered 403 (OpenAI error
shape, type permission_error).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from luodi import keys
from luodi.serve.ids import Id

router = APIRouter(tags=["keys"])


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="a label, e.g. 'billing-service'")
    rate_limit_rpm: int | None = Field(None, ge=1, description="requests per minute; default: server setting")
    admin: bool = Field(False, description="an admin key may also create, list and revoke keys")
    apps: list[str] | None = Field(None, max_length=100, description="scope: only these apps (user keys)")
    kbs: list[str] | None = Field(None, max_length=100, description="scope: only these knowledge bases")
    routes: list[str] | None = Field(
        None, max_length=len(keys.ROUTE_GROUPS),
        description=f"scope: only these route groups ({', '.join(keys.ROUTE_GROUPS)})",
    )


@router.get("", summary="List API keys (never the keys themselves)")
async def list_keys() -> dict:
    rows = await run_in_threadpool(keys.list_keys)
    return {"object": "list", "data": [k.to_dict() for k in rows]}


@router.post("", status_code=201, summary="Create an API key; the key is returned once, only here")
async def create_key(body: KeyCreate) -> dict:
    k = await run_in_threadpool(lambda: keys.create_key(body.name, body.rate_limit_rpm, admin=body.admin,
                                                        apps=body.apps, kbs=body.kbs, routes=body.routes))
    return {**k.to_dict(), "key": k.key}


@router.delete("/{key_id}", summary="Revoke an API key")
async def revoke_key(key_id: Id) -> dict:
    k = await run_in_threadpool(keys.revoke_key, key_id, keep_last_admin=True)
    return k.to_dict()
