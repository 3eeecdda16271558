"""Keys and auth on PostgreSQL (LUODI_DATABASE_URL): a throwaway cluster, the server app in a subprocess.

Skips unless PostgreSQL's `initdb`/`pg_ctl` are installed and `psycopg` is importable
(`pip install 'luodi[postgres]'`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import free_port

pytest.importorskip("psycopg")


def _as_postgres_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["su", "postgres", "-c", " ".join(cmd)]


@pytest.fixture(scope="module")
def pg_url():
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        pytest.skip("running as root without a 'postgres' user to run the cluster")
    root = Path(tempfile.mkdtemp(prefix="luodi-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    data = root / "data"
    subprocess.run(
        _as_postgres_user([initdb, "-D", str(data), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    opts = f"'-p {port} -k {root} -c listen_addresses=127.0.0.1'"
    subprocess.run(
        _as_postgres_user([pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        import psycopg

        for _ in range(50):
            try:
                with psycopg.connect(
                    f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True
                ) as con:
                    con.execute("CREATE DATABASE luodi")
                break
            except psycopg.OperationalError:
                time.sleep(0.2)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/luodi"
    finally:
        subprocess.run(
            _as_postgres_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


SCRIPT = textwrap.dedent("""
    import hashlib, json
    from fastapi.testclient import TestClient
    from sqlalchemy import text
    from luodi.keys import create_key, revoke_key
    from luodi.serve.app import create_app
    from luodi.store import get_engine

    k = create_key("pg-key", 2, admin=True)
    out = {}
    with TestClient(create_app(preload=False)) as c:
        h = {"Authorization": "Bearer " + k.key}
        out["ok"] = c.get("/v1/models", headers=h).status_code
        out["created"] = c.post("/v1/keys", headers=h, json={"name": "via-http"}).status_code
        out["limited"] = c.get("/v1/models", headers=h).status_code
        revoke_key(k.id)
        out["revoked"] = c.get("/v1/models", headers=h).status_code
    with get_engine().connect() as con:
        out["dialect"] = con.dialect.name
        stored = con.execute(text("select key_hash from api_keys where id = :i"), {"i": k.id}).scalar()
        out["hash_ok"] = stored == hashlib.sha256(k.key.encode()).hexdigest()
    print(json.dumps(out))
""")


def test_keys_and_auth_on_postgres(pg_url, tmp_path):
    env = {**os.environ, "LUODI_HOME": str(tmp_path), "LUODI_DATABASE_URL": pg_url}
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {
        "ok": 200,
        "created": 201,
        "limited": 429,
        "revoked": 401,
        "dialect": "postgresql",
        "hash_ok": True,
    }


KEYS = textwrap.dedent("""
    import json
    from luodi.keys import create_key
    admin, limited, other = create_key("admin", admin=True), create_key("limited", 3), create_key("other")
    print(json.dumps({"admin": admin.key, "limited": limited.key, "other": other.key, "other_id": other.id}))
""")
SERVE = ("import sys, uvicorn; from luodi.serve.app import create_app; "
         "uvicorn.run(create_app(preload=False), host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')")


def test_two_servers_on_one_store_behave_as_one(pg_url, tmp_path):
    """Two server processes on one PostgreSQL store (issue 20's replicas): a key's rate limit counts calls to
    both, and a key revoked through one is refused by the other at once."""
    import json

    import httpx

    env = {**os.environ, "LUODI_HOME": str(tmp_path), "LUODI_DATABASE_URL": pg_url}
    r = subprocess.run([sys.executable, "-c", KEYS], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    keys = json.loads(r.stdout.strip().splitlines()[-1])
    ports = [free_port(), free_port()]
    servers = [subprocess.Popen([sys.executable, "-c", SERVE, str(p)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for p in ports]
    try:
        a, b = (f"http://127.0.0.1:{p}" for p in ports)
        for url, proc in zip((a, b), servers, strict=True):
            for _ in range(300):
                assert proc.poll() is None, proc.stderr.read()[-3000:]
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)

        def call(url: str, key: str) -> int:
            return httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code

        assert [call(a, keys["limited"]), call(b, keys["limited"]), call(a, keys["limited"])] == [200, 200, 200]
        assert call(b, keys["limited"]) == 429  # the fourth call in the minute, the second on this server
        assert call(a, keys["other"]) == call(b, keys["other"]) == 200
        gone = httpx.delete(f"{a}/v1/keys/{keys['other_id']}", headers={"Authorization": f"Bearer {keys['admin']}"})
        assert gone.status_code == 200, gone.text
        assert call(b, keys["other"]) == 401  # revoked through the other server: refused at once
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=30)
