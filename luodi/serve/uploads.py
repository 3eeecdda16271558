"""Multipart file uploads shared by the routes that take files (knowledge-base documents, app inputs): each is
read into memory, bounded in size, and handed on as (name, bytes); nothing is written to disk here."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from fastapi import File, UploadFile

from luodi.errors import BadRequest

MAX_UPLOAD_BYTES = 50 * 1024 * 1024


def files_field(what: str) -> Any:
    """The multipart `files` parameter of an upload route: at least one file (validated and documented in
    /openapi.json), with what read_uploads checks said in its description."""
    return File(
        ...,
        min_length=1,
        description=f"{what}; each with its file name (unique in the request) and at most "
        f"{MAX_UPLOAD_BYTES // 2**20} MB; the whole request at most LUODI_MAX_UPLOAD_MB",
    )


async def read_uploads(files: list[UploadFile], example: str, param: str = "files") -> list[tuple[str, bytes]]:
    """(file name, bytes) of each upload: a name is required (`example` shows one), at most 50 MiB each (413)."""
    items: list[tuple[str, bytes]] = []
    for f in files:
        fname = PurePath(f.filename or "").name
        if not fname or fname.startswith("."):
            raise BadRequest(f"every uploaded file needs a file name (e.g. {example})", param=param)
        data = await f.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise BadRequest(f"'{fname}' is larger than {MAX_UPLOAD_BYTES // 2**20} MiB; split it",
                             param=param, status=413)
        items.append((fname, data))
    if len({n for n, _ in items}) < len(items):
        raise BadRequest("two uploaded files have the same name; rename one", param=param)
    return items
