"""`luodi keys create | list | revoke`: API keys from the command line (thin face of luodi.keys)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from luodi import keys as keys_service
from luodi.cli.common import fail as _fail
from luodi.errors import LuodiError

console = Console()

keys_app = typer.Typer(help="API keys: create, list, revoke (admin keys also manage keys).", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="a label, e.g. billing-service")],
    rpm: Annotated[int | None, typer.Option("--rpm", help="requests per minute for this key")] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="admin key: may also create, list and revoke keys over HTTP")
    ] = False,
    apps: Annotated[str | None, typer.Option("--apps", help="scope: only these apps, e.g. a,b")] = None,
    kbs: Annotated[str | None, typer.Option("--kbs", help="scope: only these knowledge bases")] = None,
    routes: Annotated[str | None, typer.Option(
        "--routes", help=f"scope: only these route groups ({','.join(keys_service.ROUTE_GROUPS)})")] = None,
) -> None:
    """Create a key (a user key unless --admin); it is printed once and stored only as a hash."""
    def split(v: str | None) -> list[str] | None:
        return None if v is None else [p.strip() for p in v.split(",")]

    try:
        k = keys_service.create_key(name, rpm, admin=admin, apps=split(apps), kbs=split(kbs), routes=split(routes))
    except LuodiError as e:
        raise _fail(e) from e
    console.print(f"created key {k.id} ({k.name}, {k.role}); copy it now, it is not shown again:")
    sys.stdout.write(k.key + "\n")
    sys.stdout.flush()


@keys_app.command("list")
def keys_list() -> None:
    """List keys (prefix only)."""
    t = Table(title="API keys")
    for col in ("id", "name", "role", "prefix", "rpm", "created", "status"):
        t.add_column(col)
    for k in keys_service.list_keys():
        t.add_row(
            str(k.id),
            k.name,
            f"{k.role} ({keys_service.describe_scope(k.scope)})" if k.scope else k.role,
            k.prefix + "…",
            str(k.rate_limit_rpm or "default"),
            f"{k.created_at:%Y-%m-%d %H:%M}",
            "active" if k.active else "revoked",
        )
    console.print(t)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="the key's id (see `luodi keys list`)")]) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    try:
        k = keys_service.revoke_key(key_id)
    except LuodiError as e:
        raise _fail(e) from e
    console.print(f"revoked key {k.id} ({k.name}, {k.prefix}…)")


@keys_app.command("rotate-encryption")
def keys_rotate_encryption(
    new_key_file: Annotated[str | None, typer.Option(
        "--new-key-file", help="file holding the new encryption key (else env LUODI_ENCRYPTION_NEW_KEY)")] = None,
    old_key_file: Annotated[list[str] | None, typer.Option(
        "--old-key-file", help="another key data may still be under (repeatable); the configured key always is")]
        = None,
) -> None:
    """Re-encrypt runs, knowledge bases and store texts under a new key (also encrypts plaintext left from
    before). Safe to interrupt: run it again with the same keys to finish; then set the new key as
    LUODI_ENCRYPTION_KEY (docs/encryption.md)."""
    from luodi import crypto, rekey
    from luodi.settings import get_settings

    try:
        if new_key_file:
            new = crypto.key_from_file(new_key_file, "--new-key-file")
        elif get_settings().encryption_new_key:
            new = crypto.parse_key(get_settings().encryption_new_key, "LUODI_ENCRYPTION_NEW_KEY")
        else:
            raise crypto.EncryptionKeyError(
                "no new key: pass --new-key-file FILE or set LUODI_ENCRYPTION_NEW_KEY (32 bytes, hex or base64)",
                param="--new-key-file")
        old = [k for k in [crypto.configured_key()] if k is not None]
        old += [crypto.key_from_file(f, "--old-key-file") for f in old_key_file or []]
        rep = rekey.rotate(new, old, lambda p, n: console.print(f"re-encrypted {p}") if n % 50 == 0 else None)
    except LuodiError as e:
        raise _fail(e) from e
    console.print(f"done: {rep.files_rewritten} files re-encrypted, {rep.files_already_new} already under the new "
                  f"key (id {new.id_hex}), {rep.runs} runs, rows: {rep.rows or 'none'}")
    console.print("now set the new key as LUODI_ENCRYPTION_KEY (or LUODI_ENCRYPTION_KEY_FILE) everywhere")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
