"""A revoked key is refused at once by every process on the same store (issue 20: replicas behave as one server),
unless LUODI_KEY_CACHE_SECONDS trades that for a store lookup saved per request. The other process is a real one:
`luodi keys revoke` run beside this one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from luodi import keys
from luodi.errors import AuthError
from luodi.settings import reset_settings


def revoke_elsewhere(key_id: int) -> None:
    cli = [sys.executable, "-c", "from luodi.cli import main; main()", "keys", "revoke", str(key_id)]
    p = subprocess.run(cli, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert p.returncode == 0, p.stderr


def verified(plain: str) -> keys.KeyInfo:
    """What the server's auth does for each request."""
    return keys.cached_key(plain) or keys.verify_key(plain)


def test_revocation_in_another_process_applies_at_once():
    created = keys.create_key("cache-off")
    assert verified(created.key).id == created.id
    revoke_elsewhere(created.id)
    with pytest.raises(AuthError, match="revoked"):
        verified(created.key)


def test_with_a_key_cache_the_revocation_waits_for_it(monkeypatch):
    monkeypatch.setenv("LUODI_KEY_CACHE_SECONDS", "30")
    reset_settings()
    try:
        created = keys.create_key("cache-on")
        assert verified(created.key).id == created.id
        revoke_elsewhere(created.id)
        assert verified(created.key).id == created.id  # still remembered: the documented trade-off
        keys.revoke_key(keys.create_key("other").id)  # a revocation in this process empties the cache
        with pytest.raises(AuthError, match="revoked"):
            verified(created.key)
    finally:
        monkeypatch.delenv("LUODI_KEY_CACHE_SECONDS")
        reset_settings()


def test_admin_key_from_the_environment_is_created_once(monkeypatch):
    from fastapi.testclient import TestClient

    from luodi.errors import ConfigError
    from luodi.serve.app import create_app

    plain = "ld-" + "k8s-secret-admin-key-0123456789abcdef"
    monkeypatch.setenv("LUODI_ADMIN_KEY", plain)
    reset_settings()
    try:
        with TestClient(create_app(preload=False)) as c:  # start-up creates it
            made = c.post("/v1/keys", headers={"Authorization": f"Bearer {plain}"}, json={"name": "by-admin"})
            assert made.status_code == 201, made.text
        first = keys.ensure_admin_key(plain)
        assert first.admin and keys.ensure_admin_key(plain).id == first.id  # a second start finds it
        assert [k.name for k in keys.list_keys()].count("LUODI_ADMIN_KEY") == 1
        with pytest.raises(ConfigError, match="at least 32 characters"):
            keys.ensure_admin_key("short")
    finally:
        monkeypatch.delenv("LUODI_ADMIN_KEY")
        reset_settings()
