"""/v1/kb routes on a live server: create, upload (multipart), list, search, ask (JSON and SSE), delete;
bad input answers 4xx naming the field."""

from __future__ import annotations

import json

import httpx
import pytest
from test_rag import make_pdf


@pytest.fixture(scope="module")
def client(live_server):
    with httpx.Client(base_url=live_server.url, headers=live_server.headers, timeout=300) as c:
        yield c


def _error(r: httpx.Response) -> str:
    body = r.json()
    return json.dumps(body)


def test_kb_lifecycle_over_http(client, tmp_path):
    r = client.post("/v1/kb", json={"name": "http-kb"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "http-kb"
    assert "http-kb" in [k["name"] for k in client.get("/v1/kb").json()["data"]]

    pdf = tmp_path / "ferry.pdf"
    make_pdf(
        pdf,
        [
            "The ferry to Isla Verde leaves the harbour at 7:45 every morning.",
            "Tickets cost twelve euros for adults.",
        ],
    )
    files = [
        ("files", ("ferry.pdf", pdf.read_bytes(), "application/pdf")),
        ("files", ("museum.md", b"# Museum\n\nThe maritime museum is closed on Mondays.\n", "text/markdown")),
    ]
    r = client.post("/v1/kb/http-kb/documents", files=files)
    assert r.status_code == 200, r.text
    assert sorted(r.json()["added"]) == ["ferry.pdf", "museum.md"]
    r = client.post("/v1/kb/http-kb/documents", files=files[1:])  # same content again
    assert r.json()["skipped"] == ["museum.md"] and r.json()["added"] == []
    docs = client.get("/v1/kb/http-kb/documents").json()["data"]
    assert {d["source"] for d in docs} == {"ferry.pdf", "museum.md"}

    r = client.post("/v1/kb/http-kb/search", json={"query": "When is the museum closed?", "k": 2})
    assert r.status_code == 200, r.text
    top = r.json()["data"][0]
    assert top["source"] == "museum.md" and "Mondays" in top["text"] and r.json()["found"]

    r = client.post("/v1/kb/http-kb/ask", json={"question": "What time does the ferry leave?"})
    assert r.status_code == 200, r.text
    ans = r.json()
    assert ans["found"] and ans["citations"][0]["source"] == "ferry.pdf"
    assert "7:45" in ans["citations"][0]["text"]

    r = client.post("/v1/kb/http-kb/ask", json={"question": "Who painted the Mona Lisa?"})
    assert r.json()["found"] is False and r.json()["citations"] == []

    events = []
    with client.stream(
        "POST",
        "/v1/kb/http-kb/ask",
        json={"question": "How much is an adult ticket for the ferry?", "stream": True},
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:].strip()))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "passages" and kinds[-1] == "done" and "delta" in kinds
    streamed = "".join(e["text"] for e in events if e["event"] == "delta")
    assert streamed.strip() == events[-1]["answer"]["answer"]
    assert events[-1]["answer"]["citations"][0]["source"] == "ferry.pdf"

    doc_id = next(d["id"] for d in docs if d["source"] == "museum.md")
    assert client.delete(f"/v1/kb/http-kb/documents/{doc_id}").status_code == 200
    hits = client.post("/v1/kb/http-kb/search", json={"query": "museum closed Mondays"}).json()["data"]
    assert all(h["source"] != "museum.md" for h in hits)

    assert client.delete("/v1/kb/http-kb").status_code == 200
    assert client.get("/v1/kb/http-kb").status_code == 404


def test_bad_input_is_4xx_naming_the_field(client, live_server):
    assert httpx.get(f"{live_server.url}/v1/kb").status_code == 401  # no key
    r = client.post("/v1/kb", json={"name": "Not Valid!"})
    assert r.status_code == 400 and "name" in _error(r)
    client.post("/v1/kb", json={"name": "dup"})
    r = client.post("/v1/kb", json={"name": "dup"})
    assert r.status_code == 409 and "already exists" in _error(r)
    r = client.post("/v1/kb", json={"name": "x", "chunk_tokens": 3})
    assert r.status_code == 422 and "chunk_tokens" in _error(r)
    r = client.post("/v1/kb/missing/search", json={"query": "hi"})
    assert r.status_code == 404 and "missing" in _error(r)
    r = client.post("/v1/kb/dup/search", json={"query": "hi", "k": 0})
    assert r.status_code == 422 and "k" in _error(r)
    r = client.post("/v1/kb/dup/ask", json={"question": ""})
    assert r.status_code == 422 and "question" in _error(r)
    r = client.post(
        "/v1/kb/dup/documents", files=[("files", ("virus.exe", b"MZ", "application/octet-stream"))]
    )
    assert r.status_code == 415 and "unsupported" in _error(r)
    r = client.post(
        "/v1/kb/dup/documents", files=[("files", ("bad.pdf", b"%PDF-1.4 junk", "application/pdf"))]
    )
    assert r.status_code == 400 and "PDF" in _error(r)
    r = client.post("/v1/kb/dup/documents")
    assert r.status_code == 422 and "files" in _error(r)
    assert client.delete("/v1/kb/dup/documents/999999").status_code == 404
