"""The web console: `/` serves the single page, `/static/...` its files (luodi/web), all offline.

The page loads app.js as a native ES module, which imports the other modules (http.js, chat.js, ...): browsers
run a module only when it is served with a JavaScript content type, so .js files are named that way here rather
than left to the platform's mime table (which may say text/plain).

The page itself holds no secrets; it calls the same /v1/* routes as any client, sending the API key the user
typed (kept in the browser's localStorage) as a Bearer token.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from luodi.errors import NotFound

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

router = APIRouter(include_in_schema=False)

_NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate so an upgraded server never shows a stale console
_JAVASCRIPT = "text/javascript; charset=utf-8"  # the type HTML names for scripts, modules included


def _web_file(relative: str) -> Path:
    """Resolve `relative` inside WEB_DIR, refusing anything that escapes it."""
    path = (WEB_DIR / relative).resolve()
    if not path.is_relative_to(WEB_DIR) or not path.is_file():
        raise NotFound(f"no console file '{relative}': the console's files are under /static/ "
                       f"(index.html, style.css, app.js and the modules it imports)", param="path")
    return path


@router.get("/", response_class=HTMLResponse)
def console_page() -> FileResponse:
    """The console's single page."""
    return FileResponse(_web_file("index.html"), media_type="text/html; charset=utf-8", headers=_NO_CACHE)


@router.get("/static/{relative:path}")
def console_static(relative: str) -> FileResponse:
    """A static file of the console (scripts, styles, icons)."""
    path = _web_file(relative)
    if path.suffix in (".js", ".mjs"):
        media_type = _JAVASCRIPT
    else:
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if media_type.startswith("text/"):
            media_type += "; charset=utf-8"
    return FileResponse(path, media_type=media_type, headers=_NO_CACHE)
