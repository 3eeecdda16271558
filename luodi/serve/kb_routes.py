"""HTTP routes for knowledge bases (create_app mounts them at /v1/kb): list/create/delete, upload and list
documents, search, and ask (JSON, or server-sent events with `"stream": true`). Every route calls luodi.rag."""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Any, Literal

from fastapi import APIRouter, Request, UploadFile
from pydantic import Field
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from luodi import rag
from luodi.config import Strict
from luodi.errors import BadRequest, LuodiError, Overloaded
from luodi.llm import ensure_engine
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
                                   overlap=body.overlap, min_score=body.min_score)


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


@router.post("/{name}/search")
async def search(name: str, body: SearchRequest) -> dict[str, Any]:
    res = await run_in_threadpool(rag.search, name, body.query, k=body.k, mode=body.mode)
    return {"object": "list", "data": [h.as_dict() for h in res.hits], "found": res.found,
            "best_dense": res.best_dense, "min_score": res.min_score}


@router.post("/{name}/ask")
async def ask(name: str, body: AskRequest, request: Request):
    """Answer from the KB with citations; `stream: true` sends events passages, delta..., done."""
    state = get_state(request)

    def engine():  # loaded only when the answer needs it
        try:
            return ensure_engine(state)
        except Overloaded as e:  # the server runs without a chat model: say what still works
            raise Overloaded(f"{e.message}; answers need an LLM, search still works at /v1/kb/{name}/search") from e

    events = rag.ask_stream(name, body.question, body.k, engine=engine, max_tokens=body.max_tokens)
    first = await events.__anext__()  # bad KB name / question -> a normal 4xx here
    if not body.stream:
        final: dict[str, Any] = {}
        async for ev in events:
            if ev["event"] == "done":
                final = ev["answer"]
        return final

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

    return EventSourceResponse(gen(), ping=15, sep="\n")
