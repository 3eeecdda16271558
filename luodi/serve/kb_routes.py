"""HTTP routes for knowledge bases (create_app mounts them at /v1/kb): list/create/delete, upload and list
documents, search, and ask (JSON, or server-sent events with `"stream": true`). Every route calls luodi.rag."""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any, Literal

from fastapi import APIRouter, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import Field
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from luodi import rag
from luodi.config import Strict
from luodi.errors import BadRequest, LuodiError, Overloaded
from luodi.llm import ensure_engine
from luodi.options.privacy import PII_REMOVED_HEADER
from luodi.rag.ingest import delete_document
from luodi.serve.auth import visible
from luodi.serve.ids import Id
from luodi.serve.limits import error_responses
from luodi.serve.state import get_state
from luodi.serve.uploads import files_field, read_uploads

router = APIRouter(tags=["knowledge bases"])


class CreateKb(Strict):
    name: str = Field(description="lowercase letters, digits, '-' or '_'", examples=["product-docs"])
    chunk_tokens: int = Field(200, ge=16, le=512, description="max encoder tokens per chunk")
    overlap: int = Field(1, ge=0, le=5, description="sentences repeated between neighbouring chunks")
    min_score: float | None = Field(None, ge=-1, le=1, description="'not found' threshold on best cosine")
    pii: bool | dict[str, Any] | None = Field(
        None,
        description="redact PII from documents and questions before they are stored, embedded, searched or sent "
        "to the LLM: true (every entity type) or PII settings, e.g. {\"ner_app\": null} for patterns only",
        examples=[True, {"entities": ["EMAIL_ADDRESS", "PHONE_NUMBER"], "ner_app": None}],
    )
    injection: bool | dict[str, Any] | None = Field(
        None,
        description="guard.injection for answers: retrieved passages carrying injected instructions are dropped "
        "(mode block) or flagged (mode flag) before the LLM sees them; true (the defaults) or settings "
        "(docs/security-guard.md)",
        examples=[True, {"mode": "flag", "checks": ["heuristics"]}],
    )


class SearchRequest(Strict):
    query: str = Field(min_length=1, max_length=2000, description="what to look for")
    k: int = Field(5, ge=1, le=100, description="passages returned")
    mode: Literal["hybrid", "dense", "bm25"] = Field("hybrid", description="ranking: blended, vectors or BM25")


class AskRequest(Strict):
    question: str = Field(min_length=1, max_length=2000, description="the question to answer from the KB")
    k: int = Field(3, ge=1, le=20, description="passages given to the model")
    stream: bool = Field(False, description="send passages, deltas and the answer as server-sent events")
    max_tokens: int = Field(64, ge=1, le=1024, description="longest answer, in tokens")


@router.get("")
async def list_kbs(request: Request) -> dict[str, Any]:
    """The knowledge bases the caller's key may use (all of them for an unscoped key)."""
    return {"object": "list", "data": visible(request, "kb", await run_in_threadpool(rag.list_kbs))}


@router.post("", status_code=201)
async def create_kb(body: CreateKb) -> dict[str, Any]:
    return await run_in_threadpool(rag.create_kb, body.name, chunk_tokens=body.chunk_tokens,
                                   overlap=body.overlap, min_score=body.min_score, pii=body.pii,
                                   injection=body.injection)


@router.get("/{name}")
async def get_kb(name: str) -> dict[str, Any]:
    return await run_in_threadpool(rag.get_kb, name)


@router.delete("/{name}")
async def delete_kb(name: str) -> dict[str, Any]:
    return await run_in_threadpool(rag.delete_kb, name)


@router.get("/{name}/documents")
async def list_documents(name: str) -> dict[str, Any]:
    return {"object": "list", "data": await run_in_threadpool(rag.list_documents, name)}


@router.post("/{name}/documents", responses=error_responses(400, 404, 413, 415))
async def upload_documents(
    name: str, files: list[UploadFile] = files_field("txt, md, html, pdf or docx files (by suffix)")
) -> dict[str, Any]:
    """Upload txt, md, html, pdf or docx files (multipart field `files`), indexed before the reply."""
    await run_in_threadpool(rag.get_kb, name)  # 404 before reading the bodies
    items = await read_uploads(files, "guide.pdf")
    for fname, _ in items:  # reject unsupported types before indexing anything
        rag_suffix_check(fname)
    report = await run_in_threadpool(rag.add_bytes, name, items)
    if report.failed and not report.added and not report.skipped:
        first = next(iter(report.failed.items()))
        raise BadRequest(f"no document could be read: '{first[0]}': {first[1]}", param="files")
    return report.as_dict()


def rag_suffix_check(fname: str) -> None:
    from luodi.rag.readers import READERS, SUPPORTED

    if PurePath(fname).suffix.lower() not in READERS:
        raise BadRequest(f"unsupported document type for '{fname}'; supported: {', '.join(SUPPORTED)}",
                         param="files", status=415)


@router.delete("/{name}/documents/{doc_id}")
async def delete_doc(name: str, doc_id: Id) -> dict[str, Any]:
    return await run_in_threadpool(delete_document, name, doc_id)


def _server_pii(request: Request) -> Any:
    """The server's guard (LUODI_GUARD_PII): it redacts the questions of KBs that have no pii setting."""
    return get_state(request).extra.get("pii_guard")


@router.post("/{name}/search")
async def search(name: str, body: SearchRequest, request: Request, response: Response) -> dict[str, Any]:
    res = await run_in_threadpool(rag.search, name, body.query, k=body.k, mode=body.mode, pii=_server_pii(request))
    response.headers[PII_REMOVED_HEADER] = ",".join(res.pii_removed) or "none"
    return {"object": "list", "data": [h.as_dict() for h in res.hits], "found": res.found,
            "best_dense": res.best_dense, "min_score": res.min_score, "pii_removed": res.pii_removed}


@router.post("/{name}/ask")
async def ask(name: str, body: AskRequest, request: Request):
    """Answer from the KB with citations; `stream: true` sends events passages, delta..., done."""
    state = get_state(request)

    def engine():  # loaded only when the answer needs it
        try:
            return ensure_engine(state)
        except Overloaded as e:  # the server runs without a chat model: say what still works
            raise Overloaded(f"{e.message}; answers need an LLM, search still works at /v1/kb/{name}/search") from e

    events = rag.ask_stream(name, body.question, body.k, engine=engine, max_tokens=body.max_tokens,
                            pii=_server_pii(request))  # the KB's own pii and injection settings apply in rag
    first = await events.__anext__()  # bad KB name / question -> a normal 4xx here
    headers = {PII_REMOVED_HEADER: ",".join(first["pii_removed"]) or "none"}
    if not body.stream:
        final: dict[str, Any] = {}
        async for ev in events:
            if ev["event"] == "done":
                final = ev["answer"]
        return JSONResponse(final, headers=headers)

    async def gen():
        yield {"event": first["event"], "data": json.dumps(first)}
        try:
            async for ev in events:
                if await request.is_disconnected():
                    break
                yield {"event": ev["event"], "data": json.dumps(ev)}
        except LuodiError as e:  # after the headers went out, an error is the stream's last event
            yield {"event": "error", "data": json.dumps({"error": {"message": e.message, "code": e.code}})}
        finally:
            await events.aclose()

    return EventSourceResponse(gen(), ping=15, sep="\n", headers=headers)
