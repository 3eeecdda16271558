"""Server hardening (issue 18): bad ids are 4xx, not 500."""

from __future__ import annotations

import pytest
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
