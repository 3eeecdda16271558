"""Knowledge bases (RAG): ingest documents, hybrid retrieval, answers with citations, evaluation.

create_kb("docs"); add_documents("docs", ["manual/"]); ask("docs", "How do I reset it?")
"""

from __future__ import annotations

from typing import Any

from luodi.rag.answer import Answer, Citation, ask, ask_async, ask_stream
from luodi.rag.eval import evaluate
from luodi.rag.ingest import IngestReport, add_bytes, add_paths, delete_document, delete_kb
from luodi.rag.kbs import create_kb, get_kb, list_documents, list_kbs
from luodi.rag.retrieve import Hit, SearchResult, search

add_documents = add_paths


def ensure_kb(name: str, **config: Any) -> dict[str, Any]:
    """The knowledge base `name`, created with `config` if it does not exist yet."""
    from luodi.errors import NotFound

    try:
        return get_kb(name)
    except NotFound:
        return create_kb(name, **config)


__all__ = [
    "Answer",
    "Citation",
    "Hit",
    "IngestReport",
    "SearchResult",
    "add_bytes",
    "add_documents",
    "add_paths",
    "ask",
    "ask_async",
    "ask_stream",
    "create_kb",
    "delete_document",
    "delete_kb",
    "ensure_kb",
    "evaluate",
    "get_kb",
    "list_documents",
    "list_kbs",
    "search",
]
