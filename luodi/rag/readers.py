"""Turn a document (txt, md, html, pdf, docx) into plain text; citations are character spans into it."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

from luodi.errors import BadRequest

SUPPORTED = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx")


def _decode(data: bytes) -> str:
    for enc in ("utf-8-sig", "utf-16"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def read_text(data: bytes) -> str:
    return _decode(data).replace("\r\n", "\n").replace("\r", "\n")


def read_html(data: bytes) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(data), "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    text = soup.get_text("\n")
    text = "\n".join(line.strip() for line in text.splitlines())
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return f"{title}\n\n{text}" if title and not text.startswith(title) else text


def read_pdf(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [(p.extract_text() or "").strip() for p in reader.pages]
    except (PdfReadError, ValueError, KeyError) as e:
        raise BadRequest(f"cannot read PDF: {e}; check that the file is a valid, unencrypted PDF") from e
    return "\n\n".join(p for p in pages if p)


def read_docx(data: bytes) -> str:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        d = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, ValueError, KeyError) as e:
        raise BadRequest(f"cannot read DOCX: {e}; check that the file is a valid Word .docx file") from e
    parts = [p.text.strip() for p in d.paragraphs]
    for table in d.tables:
        for row in table.rows:
            parts.append(" | ".join(c.text.strip() for c in row.cells))
    return "\n\n".join(p for p in parts if p)


READERS: dict[str, Callable[[bytes], str]] = {
    ".txt": read_text,
    ".md": read_text,
    ".markdown": read_text,
    ".html": read_html,
    ".htm": read_html,
    ".pdf": read_pdf,
    ".docx": read_docx,
}


def extract_text(name: str, data: bytes) -> str:
    """Plain text of a document named `name` (its suffix picks the reader)."""
    suffix = Path(name).suffix.lower()
    reader = READERS.get(suffix)
    if reader is None:
        raise BadRequest(
            f"unsupported document type '{suffix or name}' for '{name}'; supported: {', '.join(SUPPORTED)}",
            param="path",
        )
    return reader(data)


def iter_files(paths: list[str | Path]) -> list[Path]:
    """Every supported file under `paths` (directories recursively), sorted, without hidden files."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise BadRequest(f"path '{raw}' does not exist; give files or directories to add", param="path")
        if p.is_dir():
            out.extend(
                f
                for f in sorted(p.rglob("*"))
                if f.is_file()
                and f.suffix.lower() in READERS
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        elif p.suffix.lower() in READERS:
            out.append(p)
        else:
            raise BadRequest(
                f"unsupported document type '{p.suffix}' for '{raw}'; supported: {', '.join(SUPPORTED)}",
                param="path",
            )
    return out
