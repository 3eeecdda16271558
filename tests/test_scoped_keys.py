"""Scoped API keys (issue 18): a key limited to some apps, knowledge bases or route groups, against the real
server (TestClient) and a real SQLite store; the migration that adds the scope upgrades a store with keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from fastapi.testclient import TestClient

from luodi.errors import BadRequest
from luodi.keys import ROUTE_GROUPS, create_key, list_keys
from luodi.serve.app import create_app
from luodi.settings import get_settings


def _row() -> dict[str, float]:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return {str(k): float(v) for k, v in zip(d.feature_names, d.data[0], strict=True)}


ROW = _row()


def _train(tmp_path, name: str) -> str:
    """A small table app (LightGBM on sklearn's breast cancer set, seconds)."""
    import yaml

    from luodi import api
    from luodi.apps import registry

    if name not in registry.apps_with_runs():
        cfg = {
            "name": name,
            "task": "tabular",
            "data": {"format": "sklearn:breast_cancer", "columns": {"label": "target", "positive": "malignant"},
                     "split": {"valid": 0.25, "seed": 0}},
            "model": {"type": "lightgbm", "options": {"n_estimators": 10, "num_leaves": 4}},
            "evaluate": {"metrics": ["accuracy"]},
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        api.train(tmp_path / f"{name}.yaml", progress=False)
    return name


@pytest.fixture(scope="module")
def apps(tmp_path_factory) -> tuple[str, str]:
    tmp = tmp_path_factory.mktemp("scoped-apps")
    return _train(tmp, "scope-a"), _train(tmp, "scope-b")


@pytest.fixture(scope="module")
def client(apps):
    with TestClient(create_app(get_settings(), preload=False), raise_server_exceptions=False) as c:
        yield c


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _denied(r, *words: str) -> str:
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["type"] == "permission_error" or err["code"] == "insufficient_permissions", err
    for w in words:
        assert w in err["message"], err["message"]
    return err["message"]


def test_key_scoped_to_one_app(client, apps):
    a, b = apps
    key = create_key("only-a", apps=[a]).key
    ok = client.post(f"/v1/apps/{a}/predict", json=ROW, headers=_h(key))
    assert ok.status_code == 200, ok.text
    assert ok.json()["app"] == a and ok.json()["label"] in ("benign", "malignant")
    assert client.get(f"/v1/apps/{a}", headers=_h(key)).status_code == 200
    _denied(client.post(f"/v1/apps/{b}/predict", json=ROW, headers=_h(key)), f"app '{b}'", f"apps {a}")
    _denied(client.post(f"/v1/apps/{b}/predict/files", headers=_h(key)), f"app '{b}'")
    _denied(client.get("/v1/kb/any-kb", headers=_h(key)), "route group 'kb'", f"apps {a}")
    _denied(client.post("/v1/embeddings", json={"input": "hi"}, headers=_h(key)), "route group 'embeddings'")
    _denied(client.get("/v1/tickets", headers=_h(key)), "route group 'tickets'")
    listed = client.get("/v1/models", headers=_h(key))  # discovery stays open, narrowed to what the key may use
    assert listed.status_code == 200, listed.text
    ids = {m["id"] for m in listed.json()["data"]}
    assert a in ids and b not in ids and {"chat", "embedding"} <= {m.get("role") for m in listed.json()["data"]}
    assert client.get(f"/v1/models/{b}", headers=_h(key)).status_code == 404
    assert client.get(f"/v1/models/{a}", headers=_h(key)).status_code == 200
    # an unscoped user key still uses every app
    plain = create_key("unscoped").key
    assert client.post(f"/v1/apps/{b}/predict", json=ROW, headers=_h(plain)).status_code == 200
    # listings show a scoped key only what it may use
    names = {r["name"] for r in client.get("/v1/apps", headers=_h(key)).json()["data"]}
    assert a in names and b not in names
    assert {a, b} <= {r["name"] for r in client.get("/v1/apps", headers=_h(plain)).json()["data"]}
    assert {a, b} <= {m["id"] for m in client.get("/v1/models", headers=_h(plain)).json()["data"]}


def test_kb_listing_shows_a_scoped_key_its_knowledge_bases_only(client, apps):
    from luodi import rag

    for name in ("list-one", "list-two"):
        if name not in {k["name"] for k in rag.list_kbs()}:
            rag.create_kb(name)
    key = create_key("kb-lister", kbs=["list-one"]).key
    names = {r["name"] for r in client.get("/v1/kb", headers=_h(key)).json()["data"]}
    assert "list-one" in names and "list-two" not in names
    everyone = {r["name"] for r in client.get("/v1/kb", headers=_h(create_key("kb-all").key)).json()["data"]}
    assert {"list-one", "list-two"} <= everyone


def test_key_scoped_to_knowledge_bases_and_routes(client, apps):
    key = create_key("kb-and-agents", kbs=["kb-one"], routes=["agents"]).key
    assert client.get("/v1/kb/kb-one", headers=_h(key)).status_code == 404  # in scope: reaches the route
    _denied(client.get("/v1/kb/kb-two", headers=_h(key)), "knowledge base 'kb-two'", "knowledge bases kb-one")
    _denied(client.post("/v1/agents/runs", json={"goal": "x", "kb": "kb-two"}, headers=_h(key)),
            "knowledge base 'kb-two'")
    _denied(client.post("/v1/agents/runs", json={"goal": "x"}, headers=_h(key)), "knowledge base")  # default KB
    _denied(client.post(f"/v1/apps/{apps[0]}/predict", json=ROW, headers=_h(key)), "route group 'apps'")
    # routes only: any app, no knowledge base
    apps_only = create_key("apps-group", routes=["apps"]).key
    assert client.post(f"/v1/apps/{apps[1]}/predict", json=ROW, headers=_h(apps_only)).status_code == 200
    _denied(client.get("/v1/kb", headers=_h(apps_only)), "route group 'kb'")


def test_scoped_key_cannot_manage_keys_or_read_the_audit_log(client, apps):
    key = create_key("scoped-user", apps=[apps[0]]).key
    assert client.get("/v1/keys", headers=_h(key)).status_code == 403
    assert client.get("/v1/audit-log", headers=_h(key)).status_code == 403


def test_admin_route_creates_scoped_keys_and_rejects_bad_scope(client, apps):
    admin = _h(create_key("scope-admin", admin=True).key)
    r = client.post("/v1/keys", headers=admin, json={"name": "via-http", "apps": [apps[0]], "routes": ["chat"]})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["scope"] == {"apps": [apps[0]], "routes": ["chat"]} and made["role"] == "user"
    listed = {k["id"]: k for k in client.get("/v1/keys", headers=admin).json()["data"]}
    assert listed[made["id"]]["scope"] == made["scope"] and "key" not in listed[made["id"]]
    assert client.post(f"/v1/apps/{apps[0]}/predict", json=ROW, headers=_h(made["key"])).status_code == 200
    for body, field in (
        ({"name": "x", "routes": ["chat", "nope"]}, "routes"),
        ({"name": "x", "apps": [""]}, "apps"),
        ({"name": "x", "kbs": ["a b"]}, "kbs"),
        ({"name": "x", "apps": []}, "apps"),
        ({"name": "x", "admin": True, "kbs": ["k"]}, "admin"),
    ):
        r = client.post("/v1/keys", headers=admin, json=body)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert err["param"] == field and f"field '{field}'" in err["message"], err


def test_scope_is_checked_in_the_library_and_the_cli():
    with pytest.raises(BadRequest, match="route groups: " + ", ".join(ROUTE_GROUPS)):
        create_key("bad", routes=["everything"])
    from typer.testing import CliRunner

    from luodi.cli import app

    r = CliRunner().invoke(app, ["keys", "create", "cli-scoped", "--apps", "a1,a2", "--routes", "chat"])
    assert r.exit_code == 0, r.output
    k = next(k for k in list_keys() if k.name == "cli-scoped")
    assert k.scope == {"apps": ["a1", "a2"], "routes": ["chat"]}
    r = CliRunner().invoke(app, ["keys", "create", "cli-bad", "--routes", "chat,,kb"])
    assert r.exit_code == 2 and "field 'routes'" in r.output


def test_visible_narrows_a_listing_to_the_keys_scope():
    """The helper listing routes use: a scoped key's rows only; every row for an unscoped key or auth off."""
    from starlette.requests import Request

    from luodi.keys import verify_key
    from luodi.serve.auth import visible

    rows = [{"name": "x"}, {"name": "y"}]

    def req(key: str | None) -> Request:
        return Request({"type": "http", "state": {"luodi_key_checked": verify_key(key) if key else None}})

    assert visible(req(create_key("vis-app", apps=["x"]).key), "app", rows) == [{"name": "x"}]
    assert visible(req(create_key("vis-kb", kbs=["y"]).key), "kb", rows) == [{"name": "y"}]
    assert visible(req(create_key("vis-kb2", kbs=["y"]).key), "app", rows) == rows  # no app limit
    assert visible(req(create_key("vis-any").key), "app", rows) == rows
    assert visible(req(None), "kb", rows) == rows


UPGRADE_SCRIPT = textwrap.dedent("""
    import json
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
    command.upgrade(cfg, "0003")  # a store as luodi left it before scoped keys, with a user and an admin key
    with create_engine(url).begin() as con:
        for name, plain, admin in (("old-user", "ld-old-user-secret", False), ("old-admin", "ld-old-admin", True)):
            con.execute(
                text("insert into api_keys (name, prefix, key_hash, created_at, admin) "
                     "values (:n, :p, :h, '2026-01-01 00:00:00', :a)"),
                {"n": name, "p": plain[:10], "h": hash_key(plain), "a": admin},
            )

    from fastapi.testclient import TestClient
    from luodi.keys import create_key, list_keys
    from luodi.serve.app import create_app

    out = {}
    with TestClient(create_app(preload=False)) as c:  # first use upgrades the store to head
        out["old_user"] = c.get("/v1/tickets", headers={"Authorization": "Bearer ld-old-user-secret"}).status_code
        out["old_admin"] = c.get("/v1/keys", headers={"Authorization": "Bearer ld-old-admin"}).status_code
        scoped = create_key("new-scoped", routes=["kb"]).key
        out["scoped"] = c.get("/v1/tickets", headers={"Authorization": "Bearer " + scoped}).status_code
    out["keys"] = [[k.name, k.role, k.scope] for k in list_keys()]
    with create_engine(url).connect() as con:
        out["revision"] = con.execute(text("select version_num from alembic_version")).scalar()
    print(json.dumps(out))
""")


def test_migration_upgrades_a_store_with_keys(tmp_path):
    env = {**os.environ, "LUODI_HOME": str(tmp_path)}
    env.pop("LUODI_DATABASE_URL", None)
    r = subprocess.run([sys.executable, "-c", UPGRADE_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["old_user"] == 200 and out["old_admin"] == 200 and out["scoped"] == 403
    assert out["keys"] == [["old-user", "user", None], ["old-admin", "admin", None],
                           ["new-scoped", "user", {"routes": ["kb"]}]]
    assert out["revision"] == "0006"  # migrated to the head


try:  # the throwaway PostgreSQL cluster of test_server_postgres (skips there without psycopg / PostgreSQL)
    from test_server_postgres import pg_url  # noqa: F401
except pytest.skip.Exception:
    @pytest.fixture
    def pg_url():
        pytest.skip("psycopg not installed (pip install 'luodi[postgres]')")


PG_SCRIPT = textwrap.dedent("""
    import json
    from fastapi.testclient import TestClient
    from sqlalchemy import text
    from luodi.keys import create_key, list_keys
    from luodi.serve.app import create_app
    from luodi.store import get_engine

    k = create_key("pg-scoped", apps=["a1"], kbs=["k1"])
    out = {}
    with TestClient(create_app(preload=False)) as c:
        h = {"Authorization": "Bearer " + k.key}
        out["kb_in"] = c.get("/v1/kb/k1", headers=h).status_code
        out["kb_out"] = c.get("/v1/kb/k2", headers=h).status_code
    out["scope"] = next(x.scope for x in list_keys() if x.id == k.id)
    with get_engine().connect() as con:
        out["dialect"] = con.dialect.name
        out["revision"] = con.execute(text("select version_num from alembic_version")).scalar()
    print(json.dumps(out))
""")


def test_scoped_keys_on_postgres(pg_url, tmp_path):
    """The migration applies on PostgreSQL by URL, and the scope round-trips through its JSON column."""
    env = {**os.environ, "LUODI_HOME": str(tmp_path), "LUODI_DATABASE_URL": pg_url}
    r = subprocess.run([sys.executable, "-c", PG_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"kb_in": 404, "kb_out": 403, "scope": {"apps": ["a1"], "kbs": ["k1"]},
                   "dialect": "postgresql", "revision": "0006"}
