"""Crash-safe files: write beside the target, flush to disk, then swap it in with os.replace.

A reader (or a process restarted after a kill) sees the old file or the new one, never half of one. Standard
library only, and imported by nothing of luodi's own: every layer may use it (luodi.engines.llamacpp_build runs
before luodi's dependencies are installed).

    write_json(run_dir / "state.json", state)
    with atomic_path(run_dir / "model.safetensors") as tmp:   # for libraries that write a path themselves
        save_file(tensors, str(tmp))
    with atomic_dir(cache / "model") as tmp:                 # for writers that fill a folder
        model.save_pretrained(tmp)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)

# How a file is stored: given its target path, a function that turns the written plaintext (first path) into the
# bytes stored on disk (second path), or None to store it as written. luodi.crypto installs it (encryption at
# rest for runs and knowledge bases); this module stays free of luodi imports.
StoreFilter = Callable[[Path], Callable[[Path, Path], None] | None]
_store_filter: StoreFilter | None = None


def set_store_filter(fn: StoreFilter | None) -> None:
    global _store_filter
    _store_filter = fn


def _stored_form(path: Path) -> Callable[[Path, Path], None] | None:
    return _store_filter(path) if _store_filter is not None else None


@contextmanager
def plaintext_scratch(folder: Path, name: str, suffix: str) -> Iterator[Path]:
    """Where a file to be encrypted is written first: a private folder in shared memory (/dev/shm, a tmpfs) so
    its plaintext never reaches the disk (writers such as safetensors write a temp file beside the path and
    rename it, so the folder is private to this write); a hidden folder beside the target where there is none
    or it has less than 1 GiB free (a container's default /dev/shm is 64 MB)."""
    shm = Path("/dev/shm")
    base = folder
    if shm.is_dir() and os.access(shm, os.W_OK):
        st = os.statvfs(shm)
        base = shm if st.f_bavail * st.f_frsize >= 1 << 30 else folder
    tmp_dir = Path(tempfile.mkdtemp(dir=base, prefix=f".luodi-{name}.", suffix=".plain"))  # mode 0700
    try:
        yield tmp_dir / f"{name}{suffix}"
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp", as_stored: bool = False) -> Iterator[Path]:
    """A fresh temporary path in `path`'s folder: whatever is written there replaces `path` when the block ends
    without an error (and is removed when it raises). `suffix` keeps an extension some writers insist on
    (numpy.save adds ".npy" to a name without it). Under a folder luodi encrypts (the store filter), what is
    written is sealed on the way; `as_stored=True`: the block writes the stored bytes themselves (luodi.crypto)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    seal = None if as_stored else _stored_form(path)
    try:
        if seal is None:
            yield tmp
        else:
            with plaintext_scratch(path.parent, path.name, suffix) as plain:
                yield plain
                seal(plain, tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the file should look like any other
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike, merge: bool = False) -> Iterator[Path]:
    """A fresh temporary folder beside `path`: what is written there becomes `path` when the block ends without
    an error (and is removed when it raises), so no reader sees a half-written folder. An old `path` is moved
    aside first and removed after the swap. `merge=True` instead moves each written entry into the existing
    folder `path`, replacing its namesakes and keeping its other files (e.g. a model's files saved into a run's
    folder); each entry is swapped in whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; the folder should look like any other
        for f in tmp.rglob("*"):
            seal = _stored_form(path / f.relative_to(tmp)) if f.is_file() else None
            if seal is not None:  # (a library filled the folder: its files are sealed one by one, each atomically)
                sealed = f.with_name(f".{f.name}.sealed")
                seal(f, sealed)
                os.replace(sealed, f)
            _fsync(f)
        if merge:
            path.mkdir(exist_ok=True)
            for entry in tmp.iterdir():
                _swap_in(entry, path / entry.name)
            tmp.rmdir()
        else:
            _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(new: Path, target: Path) -> None:
    """os.replace for files and folders: an old folder at `target` is renamed aside, then removed."""
    old = None
    if target.is_dir() and not target.is_symlink():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_text(path, to_json(obj, indent) + "\n")


def to_json(obj: Any, indent: int | None = 2) -> str:
    """JSON text that also takes numpy scalars and arrays, paths and datetimes (what runs store and print)."""
    return json.dumps(obj, indent=indent, default=_json_default, ensure_ascii=False)


def _json_default(o: Any) -> Any:
    if getattr(o, "shape", None) == () or (hasattr(o, "item") and not hasattr(o, "shape")):
        return o.item()  # a numpy / torch scalar
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path | datetime):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike) -> str:
    """The file's SHA-256 (hex), read in 1 MiB blocks: what run manifests and index checksums record."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
