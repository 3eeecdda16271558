"""Optional TLS for `luodi serve`: the certificate and key files are checked before the server starts, so a
missing, unreadable or mismatched file is one clear error naming it (uvicorn would fail later with a bare
traceback). Without a certificate the server speaks plain HTTP, as behind a TLS-terminating proxy."""

from __future__ import annotations

import ssl
from pathlib import Path

from luodi.errors import ConfigError


def _readable(path: str, flag: str, env: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{flag} {path}: no such file (set by {flag} or {env})", param=flag.lstrip("-"))
    try:
        with p.open("rb") as f:
            f.read(1)
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot be read ({e.strerror}); check its permissions",
                          param=flag.lstrip("-")) from e
    return str(p)


def tls_options(certfile: str, keyfile: str) -> dict[str, str]:
    """uvicorn's ssl_certfile / ssl_keyfile arguments ({} for plain HTTP), after checking that the files exist,
    can be read and hold a PEM certificate with its private key (the key may be in the certificate file)."""
    if not certfile:
        if keyfile:
            raise ConfigError("--ssl-keyfile needs --ssl-certfile (the certificate) too", param="ssl-certfile")
        return {}
    cert = _readable(certfile, "--ssl-certfile", "LUODI_SSL_CERTFILE")
    key = _readable(keyfile, "--ssl-keyfile", "LUODI_SSL_KEYFILE") if keyfile else None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as e:
        raise ConfigError(
            f"--ssl-certfile {certfile}" + (f" / --ssl-keyfile {keyfile}" if keyfile else "")
            + f": not a PEM certificate with its matching private key ({e})",
            param="ssl-certfile",
        ) from e
    return {"ssl_certfile": cert, **({"ssl_keyfile": key} if key else {})}
