"""API keys, auth, rate limits, overload and error shapes against live servers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import openai
import pytest
import uvicorn
from conftest import free_port
from fastapi.testclient import TestClient

from luodi.keys import create_key, hash_key, list_keys, revoke_key, verify_key
from luodi.settings import get_settings

CHAT = "bundled:smollm2-135m-instruct"


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]


def test_health_and_metrics_are_open(live_server):
    assert httpx.get(f"{live_server.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{live_server.url}/metrics").status_code == 200


def test_no_key_bad_key_are_401(live_server):
    err = _error(httpx.get(f"{live_server.base_url}/models"), 401)
    assert "Authorization: Bearer" in err["message"]
    err = _error(
        httpx.get(f"{live_server.base_url}/models", headers={"Authorization": "Bearer ld-nope"}), 401
    )
    assert "invalid API key" in err["message"]
    err = _error(httpx.get(f"{live_server.base_url}/models", headers={"Authorization": "Basic abc"}), 401)
    assert "Bearer" in err["message"]
    c = openai.OpenAI(base_url=live_server.base_url, api_key="ld-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        c.models.list()


def test_keys_over_http_create_use_revoke(live_server):
    h = httpx.Client(base_url=live_server.base_url, headers=live_server.headers, timeout=30)
    created = h.post("/keys", json={"name": "http-made"})
    assert created.status_code == 201
    new = created.json()
    assert new["key"].startswith("ld-") and new["prefix"] == new["key"][:10]
    assert new["role"] == "user" and new["admin"] is False  # user keys unless asked for
    listed = h.get("/keys").json()["data"]
    assert any(k["id"] == new["id"] and k["active"] for k in listed)
    assert all("key" not in k and "key_hash" not in k for k in listed)
    other = {"Authorization": f"Bearer {new['key']}"}
    assert httpx.get(f"{live_server.base_url}/models", headers=other).status_code == 200
    assert h.delete(f"/keys/{new['id']}").json()["active"] is False
    err = _error(httpx.get(f"{live_server.base_url}/models", headers=other), 401)
    assert "revoked" in err["message"]
    _error(h.delete("/keys/999999"), 404)


def test_user_key_gets_403_on_key_management(live_server):
    user = create_key("plain-user")
    hdr = {"Authorization": f"Bearer {user.key}"}
    assert httpx.get(f"{live_server.base_url}/models", headers=hdr).status_code == 200  # other routes work
    for method, path, body in (
        ("GET", "/keys", None),
        ("POST", "/keys", {"name": "sneaky", "admin": True}),
        ("DELETE", f"/keys/{user.id}", None),
        ("POST", "/apps/any-app/promote", {"version": "v1"}),  # choosing what an app serves is admin too
    ):
        err = _error(httpx.request(method, live_server.base_url + path, headers=hdr, json=body), 403)
        assert err["type"] == "permission_error" and "admin key" in err["message"], (method, path)
    assert all(k.name != "sneaky" for k in list_keys())
    assert verify_key(user.key).active  # the DELETE did not revoke it
    c = openai.OpenAI(base_url=live_server.base_url, api_key=user.key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        c.get("/keys", cast_to=object)
    admin = live_server.openai(max_retries=0)  # the fixture's key is an admin key
    assert any(k["id"] == user.id and k["role"] == "user" for k in admin.get("/keys", cast_to=object)["data"])


def test_last_admin_key_cannot_be_revoked_over_http(live_server):
    h = httpx.Client(base_url=live_server.base_url, headers=live_server.headers, timeout=30)
    mine = verify_key(live_server.headers["Authorization"].split()[-1])
    for k in list_keys():
        if k.admin and k.id != mine.id:
            revoke_key(k.id)  # leave the fixture's key as the only admin key
    err = _error(h.delete(f"/keys/{mine.id}"), 409)
    assert "last active admin key" in err["message"] and "luodi keys revoke" in err["message"]
    assert verify_key(live_server.headers["Authorization"].split()[-1]).active
    spare = h.post("/keys", json={"name": "spare-admin", "admin": True}).json()
    assert h.delete(f"/keys/{spare['id']}").json()["active"] is False  # another admin remained: allowed


def test_admin_key_can_make_admin_keys(live_server):
    h = httpx.Client(base_url=live_server.base_url, headers=live_server.headers, timeout=30)
    made = h.post("/keys", json={"name": "second-admin", "admin": True})
    assert made.status_code == 201 and made.json()["role"] == "admin"
    hdr = {"Authorization": f"Bearer {made.json()['key']}"}
    listed = httpx.get(f"{live_server.base_url}/keys", headers=hdr).json()["data"]
    assert {k["role"] for k in listed} <= {"admin", "user"}
    assert next(k for k in listed if k["id"] == made.json()["id"])["admin"] is True
    assert httpx.delete(f"{live_server.base_url}/keys/{made.json()['id']}", headers=hdr).json()["active"] is False


UPGRADE_SCRIPT = textwrap.dedent("""
    import json, sys
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text
    from luodi.keys import hash_key
    from luodi.settings import get_settings
    from luodi.store.db import MIGRATIONS

    url = get_settings().db_url
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0001")  # a store as luodi 0001 left it, with two keys (one revoked)
    with create_engine(url).begin() as con:
        for name, plain, revoked in (("old-ops", "ld-old-ops-secret", None), ("old-gone", "ld-old-gone", "2026-01-02")):
            con.execute(
                text("insert into api_keys (name, prefix, key_hash, rate_limit_rpm, created_at, revoked_at) "
                     "values (:n, :p, :h, 7, '2026-01-01 00:00:00', :r)"),
                {"n": name, "p": plain[:10], "h": hash_key(plain), "r": revoked},
            )

    from fastapi.testclient import TestClient
    from luodi.keys import create_key, list_keys, verify_key
    from luodi.serve.app import create_app

    out = {"old": verify_key("ld-old-ops-secret").to_dict()}  # first use upgrades the store to head
    new = create_key("after-upgrade")
    with TestClient(create_app(preload=False)) as c:
        out["old_lists"] = c.get("/v1/keys", headers={"Authorization": "Bearer ld-old-ops-secret"}).status_code
        out["new_lists"] = c.get("/v1/keys", headers={"Authorization": "Bearer " + new.key}).status_code
    out["keys"] = [[k.name, k.role, k.active, k.rate_limit_rpm] for k in list_keys()]
    with create_engine(url).connect() as con:
        out["revision"] = con.execute(text("select version_num from alembic_version")).scalar()
    from alembic.script import ScriptDirectory
    out["head"] = ScriptDirectory.from_config(cfg).get_current_head()
    print(json.dumps(out))
""")


def test_upgrade_from_0001_keeps_keys_and_makes_them_admin(tmp_path):
    """A real SQLite store created at revision 0001 upgrades in place: every key kept, old keys are admin."""
    env = {**os.environ, "LUODI_HOME": str(tmp_path)}
    env.pop("LUODI_DATABASE_URL", None)
    r = subprocess.run([sys.executable, "-c", UPGRADE_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["old"]["role"] == "admin" and out["old"]["rate_limit_rpm"] == 7
    assert out["keys"] == [
        ["old-ops", "admin", True, 7],
        ["old-gone", "admin", False, 7],
        ["after-upgrade", "user", True, None],
    ]
    assert (out["old_lists"], out["new_lists"]) == (200, 403)
    assert out["revision"] == out["head"] != "0001"


def test_non_openai_route_validation_is_422_naming_the_field(live_server):
    r = httpx.post(f"{live_server.base_url}/keys", headers=live_server.headers, json={"rate_limit_rpm": 0})
    err = _error(r, 422)
    assert "name" in err["message"] and err["param"] == "name"
    assert r.json()["detail"]  # FastAPI's list is kept for clients that read it


def test_unknown_route_is_openai_shaped_404(live_server):
    err = _error(httpx.get(f"{live_server.url}/nope"), 404)
    assert "/nope" in err["message"]


def test_keys_are_stored_hashed(live_server):
    k = create_key("hash-check")
    assert verify_key(k.key).id == k.id
    db = get_settings().home / "luodi.db"
    con = sqlite3.connect(db)
    rows = con.execute("select key_hash, prefix from api_keys where id = ?", (k.id,)).fetchall()
    dump = "\n".join(con.iterdump())
    con.close()
    assert rows == [(hashlib.sha256(k.key.encode()).hexdigest(), k.key[:10])]
    assert rows[0][0] == hash_key(k.key)
    assert k.key not in dump
    for path in db.parent.glob("luodi.db*"):  # the WAL too
        assert k.key.encode() not in path.read_bytes()


def test_revoke_service_and_listing():
    k = create_key("svc")
    revoke_key(k.id)
    assert next(x for x in list_keys() if x.id == k.id).active is False
    assert all(x.id != k.id for x in list_keys(include_revoked=False))


def test_rate_limit_429_with_retry_after(live_server):
    k = create_key("slow", rate_limit_rpm=2)
    hdr = {"Authorization": f"Bearer {k.key}"}
    assert httpx.get(f"{live_server.base_url}/models", headers=hdr).status_code == 200
    assert httpx.get(f"{live_server.base_url}/models", headers=hdr).status_code == 200
    r = httpx.get(f"{live_server.base_url}/models", headers=hdr)
    err = _error(r, 429)
    assert "2 requests per minute" in err["message"]
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # other keys are not affected
    assert httpx.get(f"{live_server.base_url}/models", headers=live_server.headers).status_code == 200
    c = openai.OpenAI(base_url=live_server.base_url, api_key=k.key, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        c.models.list()


def test_auth_off_needs_no_key():
    from luodi.serve.app import create_app

    settings = get_settings().model_copy(update={"auth": "off"})
    with TestClient(create_app(settings, preload=False)) as tc:
        assert tc.get("/v1/models").status_code == 200
        assert tc.get("/v1/keys").status_code == 200


def test_overloaded_is_503_with_retry_after():
    """A server with one decoding slot and a queue of one turns the third concurrent request away."""
    from luodi.serve.app import create_app

    settings = get_settings().model_copy(update={"auth": "off", "max_running": 1, "max_queue": 1})
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    long_body = {
        "model": CHAT,
        "max_tokens": 400,
        "stream": True,
        "messages": [{"role": "user", "content": "Count to 500."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "n",
                "schema": {"type": "array", "items": {"type": "integer"}, "minItems": 300},
            },
        },
    }
    statuses: list[int] = []
    stop = threading.Event()

    def hold() -> None:  # keep a stream open (and its slot busy) until the test is done
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=long_body, timeout=300) as r:
            statuses.append(r.status_code)
            for _ in r.iter_lines():
                if stop.is_set():
                    break

    try:
        holders = [threading.Thread(target=hold, daemon=True) for _ in range(2)]
        for t in holders:
            t.start()
            time.sleep(1.0)
        third = None
        for _ in range(10):  # the first two may still be starting: retry until both are in
            short = {"model": CHAT, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
            third = httpx.post(f"{url}/v1/chat/completions", json=short, timeout=300)
            if third.status_code == 503:
                break
            time.sleep(0.5)
        err = _error(third, 503)
        assert err["message"] and err["type"] == "overloaded_error"
        assert int(third.headers["Retry-After"]) >= 1
    finally:
        stop.set()
        server.should_exit = True
        th.join(timeout=30)


def test_every_v1_route_requires_a_key(live_server):
    """Routers from every area are protected, even a route that forgot Depends(require_key)."""
    checked = 0
    for path, ops in live_server.app.openapi()["paths"].items():
        if not path.startswith("/v1/"):
            continue
        url = live_server.url + re.sub(r"\{[^}]+\}", "x", path)
        for method in ops:
            r = httpx.request(method.upper(), url, timeout=30)
            assert r.status_code == 401, f"{method.upper()} {path} answered {r.status_code} without a key"
            checked += 1
    assert checked >= 8
