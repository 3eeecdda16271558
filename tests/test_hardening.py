"""Server hardening (issue 18): bad ids are 4xx, not 500; request body limits (413); CORS; TLS; the audit log."""

from __future__ import annotations

import os
import threading

import httpx
import pytest
import uvicorn
from conftest import free_port
from fastapi.testclient import TestClient

from luodi.keys import create_key
from luodi.serve.app import create_app
from luodi.settings import get_settings

HUGE = 511613223785704097736445394944  # the id from the issue: larger than any 64-bit database id


@pytest.fixture(scope="module")
def client():
    """The real app (chat engine loaded on first use only) with an admin key."""
    with TestClient(create_app(get_settings(), preload=False), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {create_key('pytest-hardening', admin=True).key}"
        yield c


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("get", "/v1/tickets/{id}", "ticket_id"),
        ("post", "/v1/tickets/{id}/answer", "ticket_id"),
        ("delete", "/v1/keys/{id}", "key_id"),
        ("post", "/v1/agents/approvals/{id}/approve", "approval_id"),
        ("post", "/v1/agents/approvals/{id}/reject", "approval_id"),
        ("delete", "/v1/kb/some-kb/documents/{id}", "doc_id"),
        ("get", "/v1/assistants/threads/t1/messages?after={id}", "after"),
        ("get", "/v1/tickets?limit={id}", "limit"),
    ],
)
@pytest.mark.parametrize("value", [HUGE, 2**63, -1])
def test_out_of_range_ids_are_422_naming_the_field(client, method, path, field, value):
    kw = {"json": {"answer": "hello"}} if path.endswith("/answer") else {}
    r = client.request(method.upper(), path.format(id=value), **kw)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["param"] == field and field in err["message"]


def test_largest_id_reaches_the_route(client):
    """2**63-1 is a valid id: the route runs and answers its usual 404."""
    r = client.get(f"/v1/tickets/{2**63 - 1}")
    assert r.status_code == 404 and r.json()["error"]["param"] == "ticket_id"
    r = client.delete(f"/v1/keys/{2**63 - 1}")
    assert r.status_code == 404


def test_id_range_is_in_the_openapi_schema(client):
    spec = client.get("/openapi.json").json()
    params = spec["paths"]["/v1/tickets/{ticket_id}"]["get"]["parameters"]
    schema = next(p for p in params if p["name"] == "ticket_id")["schema"]
    assert schema["minimum"] == 1 and schema["maximum"] == 2**63 - 1


def test_every_integer_parameter_is_bounded(client):
    """A guard for new routes: every integer path or query parameter declares its range (use luodi.serve.ids),
    so none can reach the database with a number it cannot store."""
    spec = client.get("/openapi.json").json()
    unbounded = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                schema = param.get("schema", {})
                options = schema.get("anyOf", [schema])
                for o in options:
                    if o.get("type") == "integer" and ("maximum" not in o or "minimum" not in o):
                        unbounded.append(f"{method.upper()} {path} {param['name']}")
    assert not unbounded, f"integer parameters without a range: {unbounded}"


@pytest.mark.parametrize("path", ["/v1/apps/{name}/predict/files", "/v1/kb/{name}/documents"])
def test_upload_schemas_say_what_is_validated(client, path):
    spec = client.get("/openapi.json").json()
    op = spec["paths"][path]["post"]
    ref = op["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    files = spec["components"]["schemas"][ref]["properties"]["files"]
    assert files["minItems"] == 1 and "50 MB" in files["description"]
    assert {"400", "404", "413"} <= set(op["responses"])
    name = path.replace("{name}", "no-such-name")
    r = client.post(name, data={"other": "x"})  # no files: refused as the schema says
    assert r.status_code == 422 and r.json()["error"]["param"] == "files"


def test_completion_and_embedding_schemas_say_what_is_validated(client):
    props = lambda name: client.get("/openapi.json").json()["components"]["schemas"][name]["properties"]  # noqa: E731
    completion, embedding = props("CompletionBody"), props("EmbeddingBody")
    assert completion["prompt"]["anyOf"][1]["maxItems"] == 1 and completion["prompt"]["anyOf"][0]["minLength"] == 1
    assert completion["echo"]["enum"] == [False] and completion["suffix"]["type"] == "null"
    assert completion["stop"]["anyOf"][1]["maxItems"] == 16
    assert embedding["input"]["anyOf"][1]["maxItems"] == 2048
    assert all(o["type"] != "integer" and o.get("items", {}).get("type") != "integer"
               for o in embedding["input"]["anyOf"])
    # what the schema leaves out is refused (400, naming the field), before any model loads
    for bad in ([], [1, 2, 3], ["ok", "   "], ["x"] * 2049):
        r = client.post("/v1/embeddings", json={"input": bad})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input", (bad, r.text)


# ------------------------------------------------------------------------------------------ body limits
MB = 2**20


def _small_limits():
    return get_settings().model_copy(update={"max_body_mb": 1, "max_upload_mb": 2})


@pytest.fixture(scope="module")
def limited():
    """The app with a 1 MB body limit and a 2 MB upload limit."""
    with TestClient(create_app(_small_limits(), preload=False), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {create_key('pytest-limits', admin=True).key}"
        yield c


def _too_large(r: httpx.Response, setting: str, limit: str) -> None:
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert err["code"] == "request_too_large" and err["type"] == "invalid_request_error"
    assert setting in err["message"] and limit in err["message"], err["message"]


def test_body_under_the_limit_is_served(limited):
    r = limited.post("/v1/keys", json={"name": "x" * 100})
    assert r.status_code == 201, r.text


def test_declared_length_over_the_limit_is_413(limited):
    body = b'{"model": "m", "prompt": "' + b"a" * (2 * MB) + b'"}'
    r = limited.post("/v1/completions", content=body, headers={"Content-Type": "application/json"})
    _too_large(r, "LUODI_MAX_BODY_MB", "1 MB")


def test_chunked_body_over_the_limit_is_413(limited):
    """No Content-Length: the body is counted as it streams in."""
    sent = []

    def chunks():
        for _ in range(64):
            sent.append(1)
            yield b"a" * (64 * 1024)

    r = limited.post("/v1/keys", content=chunks(), headers={"Content-Type": "application/json"})
    _too_large(r, "LUODI_MAX_BODY_MB", "1 MB")


def test_understated_content_length_is_cut_off(limited):
    """A Content-Length that lies (says small, sends more) is still cut off at the limit."""
    body = b"a" * (2 * MB)
    r = limited.post("/v1/keys", content=body, headers={"Content-Type": "application/json", "Content-Length": "10"})
    _too_large(r, "LUODI_MAX_BODY_MB", "1 MB")


def test_uploads_have_their_own_limit(limited):
    files = [("files", ("a.txt", b"a" * (1536 * 1024), "text/plain"))]  # 1.5 MB: over the body limit, under upload
    r = limited.post("/v1/kb/no-such-kb/documents", files=files)
    assert r.status_code == 404, r.text  # reached the route
    files = [("files", (f"{i}.txt", b"a" * MB, "text/plain")) for i in range(3)]
    _too_large(limited.post("/v1/kb/no-such-kb/documents", files=files), "LUODI_MAX_UPLOAD_MB", "2 MB")


def test_live_server_stops_reading_a_chunked_body_at_the_limit(luodi_home):
    """Under uvicorn, a 64 MB chunked body to a 1 MB server is answered 413 and not read to the end."""
    app = create_app(_small_limits(), preload=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                threading.Event().wait(0.1)
        key = create_key("pytest-limits-live", admin=True).key
        sent = []

        def chunks():
            for _ in range(1024):
                sent.append(1)
                yield b"a" * (64 * 1024)

        try:
            r = httpx.post(
                f"{url}/v1/keys",
                content=chunks(),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                timeout=30,
            )
            _too_large(r, "LUODI_MAX_BODY_MB", "1 MB")
        except httpx.TransportError:
            pass  # the server closed the connection while the client was still sending: also a refusal
        assert len(sent) < 1024, "the client could send the whole 64 MB: the server read it all"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# ------------------------------------------------------------------------------------------ CORS
PREFLIGHT = {
    "Origin": "https://app.example.com",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def test_cors_is_off_by_default(client):
    r = client.options("/v1/chat/completions", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/v1/models", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_allows_the_configured_origins_only():
    settings = get_settings().model_copy(update={"cors_origins": "https://app.example.com/, http://localhost:3000"})
    with TestClient(create_app(settings, preload=False), raise_server_exceptions=False) as c:
        r = c.options("/v1/chat/completions", headers=PREFLIGHT)
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = c.get("/v1/models", headers={"Origin": "https://app.example.com"})  # 401 without a key, still CORS
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "https://app.example.com"
        r = c.options("/v1/chat/completions", headers={**PREFLIGHT, "Origin": "https://evil.example.org"})
        assert "access-control-allow-origin" not in r.headers


def test_cors_origins_env_setting(monkeypatch):
    from luodi.settings import Settings

    monkeypatch.setenv("LUODI_CORS_ORIGINS", "https://a.example, https://b.example/")
    assert Settings().cors_origin_list == ["https://a.example", "https://b.example"]
    monkeypatch.delenv("LUODI_CORS_ORIGINS")
    assert Settings().cors_origin_list == []


# ------------------------------------------------------------------------------------------ TLS
def _self_signed(tmp_path):
    """A self-signed certificate for 127.0.0.1 / localhost and its key, as PEM files (cert doubles as CA)."""
    x509 = pytest.importorskip("cryptography.x509", reason="TLS tests need the cryptography package")
    import datetime
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "luodi test")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, False, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def test_tls_server_answers_https(tmp_path, luodi_home):
    """The real app under uvicorn with the options `luodi serve --ssl-certfile/--ssl-keyfile` passes."""
    import ssl

    from luodi.serve.tls import tls_options

    cert, key = _self_signed(tmp_path)
    opts = tls_options(str(cert), str(key))
    port = free_port()
    config = uvicorn.Config(create_app(get_settings(), preload=False), host="127.0.0.1", port=port,
                            log_level="warning", **opts)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        ca = ssl.create_default_context(cafile=str(cert))
        for _ in range(300):
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/health", verify=ca, timeout=2)
                break
            except httpx.ConnectError as e:
                if "CERTIFICATE" in str(e).upper():
                    raise
                threading.Event().wait(0.1)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        with pytest.raises(httpx.ConnectError):  # an untrusted client refuses the self-signed certificate
            httpx.get(f"https://127.0.0.1:{port}/health", timeout=5)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_tls_bad_files_are_clear_cli_errors(tmp_path):
    from typer.testing import CliRunner

    from luodi.cli import app

    cert, key = _self_signed(tmp_path)
    runner = CliRunner()
    port = str(free_port())
    cases = [
        (["--ssl-certfile", str(tmp_path / "missing.pem")], "missing.pem: no such file"),
        (["--ssl-certfile", str(cert), "--ssl-keyfile", str(tmp_path / "nokey.pem")], "nokey.pem: no such file"),
        (["--ssl-keyfile", str(key)], "--ssl-keyfile needs --ssl-certfile"),
        (["--ssl-certfile", str(key), "--ssl-keyfile", str(key)], "not a PEM certificate"),
    ]
    try:
        for args, expected in cases:
            for name in ("LUODI_SSL_CERTFILE", "LUODI_SSL_KEYFILE"):  # `serve` sets them for its process
                os.environ.pop(name, None)
            r = runner.invoke(app, ["serve", "--port", port, "--no-key", *args])
            assert r.exit_code == 2, r.output + repr(r.exception)
            assert expected in " ".join(r.output.split()), r.output
            assert "Traceback" not in r.output
    finally:
        for name in ("LUODI_SSL_CERTFILE", "LUODI_SSL_KEYFILE", "LUODI_PORT"):
            os.environ.pop(name, None)
        from luodi.settings import reset_settings

        reset_settings()


def test_banner_without_a_key_says_one_is_required(capsys):
    """`luodi serve --no-key` with auth on: the banner must not claim no key is needed."""
    from luodi.cli.llm import print_banner

    print_banner("https://127.0.0.1:8443", None, "bundled:smollm2-135m-instruct", auth_on=True)
    out = " ".join(capsys.readouterr().out.split())
    assert "https://127.0.0.1:8443" in out and "required" in out and "Bearer <your key>" in out
    assert "none needed" not in out
    print_banner("http://127.0.0.1:8000", None, "m", auth_on=False)
    assert "none needed (LUODI_AUTH=off)" in " ".join(capsys.readouterr().out.split())


# ------------------------------------------------------------------------------------------ audit log
def test_audit_log_records_who_called_what_without_bodies(client):
    from luodi.keys import create_key as make_key

    user = make_key("pytest-audit-user")
    uh = {"Authorization": f"Bearer {user.key}"}
    secret = "jane.doe@example.com"
    client.post("/v1/tickets/424242/answer", json={"answer": secret}, headers=uh)  # 404, body holds "PII"
    client.get(f"/v1/kb/audit-kb?q={secret}", headers=uh)  # 404 with a query string
    client.get("/v1/models", headers={"Authorization": "Bearer ld-wrong"})  # 401
    r = client.get("/v1/audit-log", params={"key_id": user.id})
    assert r.status_code == 200, r.text
    rows = r.json()["data"]
    assert [(x["detail"]["method"], x["detail"]["route"], x["detail"]["status"]) for x in rows[:2]] == [
        ("GET", "/v1/kb/{name}", 404),
        ("POST", "/v1/tickets/{ticket_id}/answer", 404),
    ]
    assert rows[0]["detail"]["kb"] == "audit-kb" and rows[0]["actor"] == f"key:{user.id}"
    assert rows[0]["detail"]["key_name"] == "pytest-audit-user"
    everything = client.get("/v1/audit-log", params={"limit": 1000}).text
    assert secret not in everything and "424242" not in everything  # route templates, never paths or bodies
    assert any(x["actor"] == "no-valid-key" and x["detail"]["status"] == 401
               for x in client.get("/v1/audit-log").json()["data"])
    # user keys may not read it
    r = client.get("/v1/audit-log", headers=uh)
    assert r.status_code == 403 and "audit log" in r.json()["error"]["message"]


def test_audit_rows_cannot_be_changed(client):
    from luodi.errors import LuodiError
    from luodi.store import session_scope
    from luodi.store.tables import AuditLog

    client.get("/v1/tickets")
    client.get("/v1/audit-log")  # flushes the queue
    with pytest.raises(LuodiError, match="append-only"), session_scope() as s:
        row = s.query(AuditLog).order_by(AuditLog.id.desc()).first()
        row.actor = "someone-else"
        s.flush()
    with pytest.raises(LuodiError, match="append-only"), session_scope() as s:
        s.delete(s.query(AuditLog).order_by(AuditLog.id.desc()).first())
        s.flush()
