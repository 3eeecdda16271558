"""API keys: create (shown once), list, revoke, verify. Only the sha256 of a key is stored.

The CLI (`luodi keys ...`) and the HTTP routes (/v1/keys) both call these functions. A key is either a
user key (every /v1 route except key management) or an admin key (also create, list and revoke keys).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import func, select

from luodi.errors import AuthError, BadRequest, Conflict, NotFound
from luodi.store import session_scope
from luodi.store.tables import ApiKey, now

KEY_PREFIX = "ld-"
_SHOWN_CHARS = 10  # "ld-" + 7 random characters identify a key in listings


@dataclass
class KeyInfo:
    """What may be shown about a key at any time (never the key itself)."""

    id: int
    name: str
    prefix: str
    rate_limit_rpm: int | None
    created_at: datetime
    revoked_at: datetime | None
    admin: bool = False

    @property
    def role(self) -> str:
        return "admin" if self.admin else "user"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat() if self.created_at else None
        d["revoked_at"] = self.revoked_at.isoformat() if self.revoked_at else None
        d["active"] = self.active
        d["role"] = self.role
        return d


@dataclass
class CreatedKey(KeyInfo):
    """A freshly created key: `key` is the plain secret, returned exactly once."""

    key: str = ""


def hash_key(plain: str) -> str:
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        row.id, row.name, row.prefix, row.rate_limit_rpm, row.created_at, row.revoked_at, bool(row.admin)
    )


def create_key(name: str, rate_limit_rpm: int | None = None, *, admin: bool = False) -> CreatedKey:
    """Create a key named `name` (an admin key may manage keys); the plain key is in the result only."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise BadRequest(
            "field 'name': give the key a name of 1 to 200 characters, e.g. 'my-laptop'", param="name"
        )
    if rate_limit_rpm is not None and rate_limit_rpm < 1:
        raise BadRequest(
            f"field 'rate_limit_rpm': expected a positive number of requests per minute, "
            f"got {rate_limit_rpm}; omit it to use the server default",
            param="rate_limit_rpm",
        )
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    with session_scope() as s:
        row = ApiKey(
            name=name,
            prefix=plain[:_SHOWN_CHARS],
            key_hash=hash_key(plain),
            rate_limit_rpm=rate_limit_rpm,
            admin=bool(admin),
        )
        s.add(row)
        s.flush()
        info = _info(row)
    return CreatedKey(**asdict(info), key=plain)


def list_keys(include_revoked: bool = True) -> list[KeyInfo]:
    with session_scope() as s:
        q = select(ApiKey).order_by(ApiKey.id)
        if not include_revoked:
            q = q.where(ApiKey.revoked_at.is_(None))
        return [_info(r) for r in s.scalars(q)]


def revoke_key(key_id: int, *, keep_last_admin: bool = False) -> KeyInfo:
    """Revoke a key by id (idempotent); requests with it are answered 401 from then on.

    With keep_last_admin (the HTTP route) the last active admin key cannot be revoked: nobody could manage
    keys over HTTP any more. The CLI, run on the server itself, may revoke it."""
    with session_scope() as s:
        row = s.get(ApiKey, key_id)
        if row is None:
            raise NotFound(
                f"no API key with id {key_id}; list keys with `luodi keys list` or GET /v1/keys", param="id"
            )
        if keep_last_admin and row.admin and row.revoked_at is None:
            others = s.scalar(
                select(func.count(ApiKey.id)).where(
                    ApiKey.admin.is_(True), ApiKey.revoked_at.is_(None), ApiKey.id != row.id
                )
            )
            if not others:
                raise Conflict(
                    f"key {row.id} ({row.name}) is the last active admin key; create another admin key first "
                    "(POST /v1/keys with admin: true), or revoke it on the server with `luodi keys revoke "
                    f"{row.id}`",
                    param="id",
                )
        if row.revoked_at is None:
            row.revoked_at = now()
        s.flush()
        return _info(row)


def verify_key(plain: str) -> KeyInfo:
    """Return the active key matching `plain`, else raise AuthError saying why."""
    if not plain:
        raise AuthError(
            "missing API key: send the header 'Authorization: Bearer <key>' "
            "(create a key with `luodi keys create NAME`)"
        )
    with session_scope() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plain)))
        if row is None:
            raise AuthError(
                "invalid API key: check the key you sent, or create one with `luodi keys create NAME`"
            )
        if row.revoked_at is not None:
            raise AuthError(
                f"API key {row.prefix}… was revoked at {row.revoked_at:%Y-%m-%d %H:%M} UTC; "
                "create a new one with `luodi keys create NAME`"
            )
        return _info(row)
