"""API keys: create (shown once), list, revoke, verify. Only the sha256 of a key is stored.

The CLI (`luodi keys ...`) and the HTTP routes (/v1/keys) both call these functions. A key is either a
user key (every /v1 route except key management) or an admin key (also create, list and revoke keys).
A user key may be *scoped* to some apps, knowledge bases and route groups (ROUTE_GROUPS); the server enforces
the scope in luodi.serve.auth.require_key. Admin keys are never scoped.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import func, select

from luodi.errors import AuthError, BadRequest, ConfigError, Conflict, NotFound
from luodi.store import session_scope
from luodi.store.tables import ApiKey, now

KEY_PREFIX = "ld-"
_SHOWN_CHARS = 10  # "ld-" + 7 random characters identify a key in listings

# Route groups a scoped key may be limited to, by the /v1 path prefix they cover. /v1/models (discovery) is open
# to every key; key management and the audit log need an admin key, which is never scoped.
ROUTE_GROUPS: dict[str, str] = {
    "chat": "/v1/chat",  # /v1/chat/completions
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
    "apps": "/v1/apps",  # predict, runs, explain, audit, promote
    "kb": "/v1/kb",
    "agents": "/v1/agents",
    "assistant": "/v1/assistants",
    "tickets": "/v1/tickets",
}
_SCOPE_NAME = re.compile(r"^[^\s,/]{1,200}$")
_SCOPE_FIELDS = {"apps": "app", "kbs": "knowledge base", "routes": "route group"}


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
    scope: dict | None = None  # {"apps": [...], "kbs": [...], "routes": [...]}, fields absent = not limited

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
        row.id, row.name, row.prefix, row.rate_limit_rpm, row.created_at, row.revoked_at, bool(row.admin),
        row.scope or None,
    )


def make_scope(apps: list[str] | None = None, kbs: list[str] | None = None,
               routes: list[str] | None = None) -> dict | None:
    """Check and normalise a key's scope (None: unscoped). Every bad entry is a BadRequest naming its field."""
    scope: dict[str, list[str]] = {}
    for field, values in (("apps", apps), ("kbs", kbs), ("routes", routes)):
        if values is None:
            continue
        what = _SCOPE_FIELDS[field]
        if isinstance(values, str) or not values:
            raise BadRequest(f"field '{field}': expected a non-empty list of {what} names; omit it for no "
                             f"{what} limit", param=field)
        names = [str(v).strip() for v in values]
        for n in names:
            if not _SCOPE_NAME.match(n):
                raise BadRequest(f"field '{field}': {what} name {n!r} must be 1 to 200 characters without "
                                 "spaces, commas or '/'", param=field)
            if field == "routes" and n not in ROUTE_GROUPS:
                raise BadRequest(f"field 'routes': unknown route group {n!r}; route groups: "
                                 f"{', '.join(ROUTE_GROUPS)}", param="routes")
        scope[field] = sorted(set(names))
    return scope or None


def scope_groups(scope: dict) -> set[str]:
    """The route groups a scoped key may call: its `routes`, plus apps / kb when it names apps / KBs."""
    groups = set(scope.get("routes") or ())
    if scope.get("apps"):
        groups.add("apps")
    if scope.get("kbs"):
        groups.add("kb")
    return groups


def scope_allows(scope: dict | None, *, group: str | None = None, app: str | None = None,
                 kb: str | None = None) -> bool:
    """Whether a key with `scope` may call route group `group` naming `app` / `kb` (None: not named)."""
    if not scope:
        return True
    if group is not None and group not in scope_groups(scope):
        return False
    if app is not None and scope.get("apps") is not None and app not in scope["apps"]:
        return False
    return not (kb is not None and scope.get("kbs") is not None and kb not in scope["kbs"])


def describe_scope(scope: dict) -> str:
    """'apps a, b; knowledge bases x; route groups apps, kb' — what a scoped key may use."""
    parts = [f"apps {', '.join(scope['apps'])}" if scope.get("apps") else "",
             f"knowledge bases {', '.join(scope['kbs'])}" if scope.get("kbs") else "",
             f"route groups {', '.join(sorted(scope_groups(scope)))}"]
    return "; ".join(p for p in parts if p)


def create_key(name: str, rate_limit_rpm: int | None = None, *, admin: bool = False,
               apps: list[str] | None = None, kbs: list[str] | None = None,
               routes: list[str] | None = None) -> CreatedKey:
    """Create a key named `name` (an admin key may manage keys); the plain key is in the result only.

    apps / kbs / routes scope a user key (make_scope); an admin key cannot be scoped."""
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
    scope = make_scope(apps, kbs, routes)
    if admin and scope:
        raise BadRequest("field 'admin': an admin key cannot be scoped to apps, knowledge bases or routes; "
                         "create a user key for the scope", param="admin")
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    with session_scope() as s:
        row = ApiKey(
            name=name,
            prefix=plain[:_SHOWN_CHARS],
            key_hash=hash_key(plain),
            rate_limit_rpm=rate_limit_rpm,
            admin=bool(admin),
            scope=scope,
        )
        s.add(row)
        s.flush()
        info = _info(row)
    return CreatedKey(**asdict(info), key=plain)


def ensure_admin_key(plain: str) -> KeyInfo:
    """The admin key `plain` (LUODI_ADMIN_KEY, e.g. from a Kubernetes Secret), created on first use so that a fresh
    deployment can be managed over HTTP. A key once revoked stays revoked; replicas starting together create it
    once (the hash is unique)."""
    from sqlalchemy.exc import IntegrityError

    plain = plain.strip()
    if len(plain) < 32:
        raise ConfigError(
            f"LUODI_ADMIN_KEY must be at least 32 characters (got {len(plain)}); generate one with "
            "`python -c 'import secrets; print(\"ld-\" + secrets.token_urlsafe(32))'`", param="admin_key")
    for _ in range(2):
        with session_scope() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plain)))
            if row is not None:
                return _info(row)
        try:
            with session_scope() as s:
                row = ApiKey(name="LUODI_ADMIN_KEY", prefix=plain[:_SHOWN_CHARS], key_hash=hash_key(plain),
                             admin=True)
                s.add(row)
                s.flush()
                return _info(row)
        except IntegrityError:  # another replica created it first: read it
            continue
    raise ConfigError("LUODI_ADMIN_KEY could not be stored; check the store", param="admin_key")


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
    with _verified_lock:
        _verified.clear()  # revoked keys are refused from now on (cached_key)
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


# Keys the server verified recently, with LUODI_KEY_CACHE_SECONDS > 0 (off by default): the store is then asked at
# most once per that many seconds per key (a store lookup costs ~1 ms of CPU, more than the rest of a forwarded
# request). revoke_key() empties it, so a revocation in this process is immediate; one made by another process
# (`luodi keys revoke` beside a running server, another replica on the same database) applies after the delay.
_verified: dict[tuple[str, str], tuple[float, KeyInfo]] = {}
_verified_lock = threading.Lock()


def _cache_key(plain: str) -> tuple[str, str]:
    from luodi.settings import get_settings

    return get_settings().db_url, hash_key(plain)


def cached_key(plain: str) -> KeyInfo | None:
    """The active key matching `plain` if verify_key() saw it in the last LUODI_KEY_CACHE_SECONDS, else None."""
    from luodi.settings import get_settings

    ttl = get_settings().key_cache_seconds
    if not plain or ttl <= 0:
        return None
    hit = _verified.get(_cache_key(plain))
    if hit is None or time.monotonic() - hit[0] > ttl:
        return None
    return hit[1]


def verify_key(plain: str) -> KeyInfo:
    """Return the active key matching `plain`, else raise AuthError saying why."""
    info = _verify(plain)
    with _verified_lock:
        if len(_verified) > 10_000:
            _verified.clear()
        _verified[_cache_key(plain)] = (time.monotonic(), info)
    return info


def _verify(plain: str) -> KeyInfo:
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
