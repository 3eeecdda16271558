"""Encryption at rest: stored files (runs, knowledge-base indexes) and store columns (messages, tickets, chunks),
sealed with AES-256-GCM under the key in LUODI_ENCRYPTION_KEY or LUODI_ENCRYPTION_KEY_FILE.

Why this shape:
- Files are encrypted in chunks (64 KiB), so a file of any size is sealed and opened as a stream (Fernet holds
  whole files in memory). Each chunk is authenticated together with the file's header, its index and whether it
  is the last one: flipping a bit, cutting a file short, reordering, dropping or appending chunks all fail
  authentication and raise `DamagedFileError`, never hand back garbage.
- Every file gets its own random 16-byte id; its AES key is HKDF(master key, salt=file id), so chunk nonces can
  simply count (the STREAM construction) without any nonce shared between two files.
- The header names the key (an 8-byte id derived from it): a wrong or missing key is told apart from damage, and
  `luodi keys rotate-encryption` sees which files are already under the new key when it is run again after a kill.
- A file without the header is plaintext (written before encryption was turned on) and is read as it is.

Layout: header = magic(8) version(1) flags(1) chunk size(4, big-endian) key id(8) file id(16) = 38 bytes, then
chunks of ciphertext+tag (chunk size + 16 bytes each, the last one shorter or equal). Nonce of chunk i:
i (11 bytes, big-endian) + final flag (1 byte); associated data: header + i (8 bytes) + final flag (1 byte).

Store columns hold "ldenc1:<key id hex>:<base64(nonce + ciphertext)>" in their own column type (no migration):
see luodi.store.encrypted.

The one pair everything goes through: writes are luodi.atomic's (this module installs the filter that seals a
file written under a protected folder: the runs folder or the knowledge bases), reads are `read_bytes` /
`read_text` / `read_json` / `iter_plain` here. Imports only settings, errors and atomic.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from luodi import atomic
from luodi.errors import LuodiError
from luodi.settings import get_settings

MAGIC = b"\x89LDENC\r\n"  # a non-ASCII first byte (no text file starts so) and \r\n (catches newline mangling)
VERSION = 1
HEADER = struct.Struct(">8sBBI8s16s")
CHUNK = 64 * 1024
TAG = 16
_MAX_CHUNK = 64 << 20
_INFO = b"luodi encryption at rest v1: file key"
COLUMN_TAG = "ldenc1:"
KEY_SETTING = "LUODI_ENCRYPTION_KEY"
KEY_FILE_SETTING = "LUODI_ENCRYPTION_KEY_FILE"
_FIX = (
    f"set {KEY_SETTING} (32 bytes as 64 hex digits or base64, e.g. `python -c \"import os,base64;"
    f"print(base64.b64encode(os.urandom(32)).decode())\"`) or {KEY_FILE_SETTING} (a file holding such a key)"
)


class EncryptionKeyError(LuodiError):
    """The encryption key is missing, malformed or not the one a file or value was written with: a deployment
    setting to fix, so the server answers 503 and names the setting."""

    status = 503
    code = "encryption_key_error"


class DamagedFileError(LuodiError):
    """An encrypted file (or value) failed authentication: changed, cut short, reordered or extended."""

    status = 409
    code = "integrity_error"


# ---- keys ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """A 32-byte AES-256 key and its id (the first 8 bytes of HMAC-SHA256(key, 'luodi key id'))."""

    secret: bytes = field(repr=False)
    source: str = KEY_SETTING  # the setting or option it came from: named in errors

    @property
    def id(self) -> bytes:
        return hmac.new(self.secret, b"luodi key id", hashlib.sha256).digest()[:8]

    @property
    def id_hex(self) -> str:
        return self.id.hex()


def parse_key(text: str | bytes, source: str) -> Key:
    """A key from its text (64 hex digits or base64 of 32 bytes) or, from a key file, 32 raw bytes."""
    raw = text if isinstance(text, bytes) else text.encode()
    s = raw.strip()
    candidates: list[bytes] = []
    try:
        t = s.decode("ascii")
        if len(t) == 64:
            try:
                candidates.append(bytes.fromhex(t))
            except ValueError:
                pass
        for dec in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                candidates.append(dec(t + "=" * (-len(t) % 4)))
            except (binascii.Error, ValueError):
                pass
    except UnicodeDecodeError:
        pass
    if isinstance(text, bytes) and len(text) == 32:
        candidates.append(bytes(text))
    for c in candidates:
        if len(c) == 32:
            return Key(c, source)
    raise EncryptionKeyError(
        f"{source} is not a 32-byte key (give 64 hex digits or base64 of 32 bytes); {_FIX}", param=source
    )


def key_from_file(path: str | os.PathLike, source: str) -> Key:
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as e:
        raise EncryptionKeyError(f"{source}: cannot read key file '{p}' ({e.strerror}); {_FIX}", param=source) from e
    return parse_key(data, f"{source} ({p})")


@dataclass(frozen=True)
class Keyring:
    """The key new data is sealed with (None: encryption off) and every key data may be opened with."""

    primary: Key | None
    readers: tuple[Key, ...] = ()

    def by_id(self, key_id: bytes) -> Key | None:
        for k in (self.primary, *self.readers):
            if k is not None and hmac.compare_digest(k.id, key_id):
                return k
        return None


_override: Keyring | None = None
_lock = threading.Lock()
_cache: dict[tuple[str, str], Keyring] = {}


def configured_key() -> Key | None:
    """The key in the settings (LUODI_ENCRYPTION_KEY, else LUODI_ENCRYPTION_KEY_FILE), or None."""
    s = get_settings()
    if s.encryption_key:
        return parse_key(s.encryption_key, KEY_SETTING)
    if s.encryption_key_file:
        return key_from_file(s.encryption_key_file, KEY_FILE_SETTING)
    return None


def keyring() -> Keyring:
    """The keys in force: those `using_keys` set (key rotation), else the configured one."""
    if _override is not None:
        return _override
    s = get_settings()
    sig = (s.encryption_key, s.encryption_key_file)
    ring = _cache.get(sig)
    if ring is None:
        key = configured_key()
        ring = Keyring(key, ())
        with _lock:
            _cache.clear()
            _cache[sig] = ring
    return ring


def enabled() -> bool:
    return keyring().primary is not None


@contextmanager
def using_keys(primary: Key, *readers: Key) -> Iterator[Keyring]:
    """Seal with `primary` and open with it or any of `readers` inside the block (key rotation)."""
    global _override
    with _lock:
        old, _override = _override, Keyring(primary, tuple(readers))
    try:
        yield _override
    finally:
        with _lock:
            _override = old


def _opening_key(key_id: bytes, what: str) -> Key:
    ring = keyring()
    key = ring.by_id(key_id)
    if key is not None:
        return key
    if ring.primary is None:
        raise EncryptionKeyError(f"{what} is encrypted (key id {key_id.hex()}) but no encryption key is set: {_FIX}, "
                                 "with the key it was written with", param=KEY_SETTING)
    have = ", ".join(k.id_hex for k in (ring.primary, *ring.readers))
    raise EncryptionKeyError(
        f"{what} was encrypted with key id {key_id.hex()}, but the key set ({ring.primary.source}) has id {have}: "
        f"set the key it was written with; after a key change, finish `luodi keys rotate-encryption` with both "
        f"the old and the new key", param=KEY_SETTING,
    )


# ---- the chunked file format --------------------------------------------------------------------------


def _aead(key: Key, file_id: bytes):  # -> AESGCM
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return AESGCM(HKDF(hashes.SHA256(), 32, salt=file_id, info=_INFO).derive(key.secret))


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">QB", index, final)


class Sealer:
    """Writes plaintext given in any pieces as the encrypted format to `out` (a binary file); `close()` writes
    the last chunk (it must be called: without it the file is refused as cut short)."""

    def __init__(self, out: BinaryIO, key: Key, chunk: int = CHUNK):
        self.out, self.chunk = out, chunk
        self.header = HEADER.pack(MAGIC, VERSION, 0, chunk, key.id, os.urandom(16))
        self.aead = _aead(key, self.header[-16:])
        self.buf = bytearray()
        self.index = 0
        out.write(self.header)

    def _emit(self, data: bytes | bytearray | memoryview, final: bool) -> None:
        self.out.write(self.aead.encrypt(_nonce(self.index, final), data, _aad(self.header, self.index, final)))
        self.index += 1

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Full chunks are encrypted straight from `data`; at least one byte is kept back, as the last chunk is
        known only at close."""
        view = memoryview(data).cast("B")
        if self.buf:
            need = self.chunk - len(self.buf)
            self.buf += view[:need]
            view = view[need:]
            if not view:
                return
            self._emit(bytes(self.buf), False)
            self.buf = bytearray()
        n = (len(view) - 1) // self.chunk * self.chunk if view else 0
        for i in range(0, n, self.chunk):
            self._emit(view[i : i + self.chunk], False)
        self.buf += view[n:]

    def close(self) -> None:
        self._emit(bytes(self.buf), True)
        self.buf = bytearray()


def _header_fields(header: bytes, what: str) -> tuple[int, bytes]:
    magic, version, flags, chunk, key_id, _file_id = HEADER.unpack(header)
    if version != VERSION or flags != 0:
        raise DamagedFileError(
            f"{what}: encrypted header names format version {version} (flags {flags}); this luodi reads version "
            f"{VERSION}: the file is damaged or from a newer luodi; restore it from a backup or upgrade luodi"
        )
    if not 0 < chunk <= _MAX_CHUNK:
        raise DamagedFileError(f"{what}: encrypted header is damaged (chunk size {chunk}); restore it from a backup")
    return chunk, key_id


def _near_magic(head: bytes) -> bool:
    """A header whose magic lost a few bits: a damaged encrypted file, not plaintext to pass on."""
    if len(head) < len(MAGIC):  # a file cut inside the magic
        return len(head) > 0 and MAGIC.startswith(head)
    diff = sum(bin(a ^ b).count("1") for a, b in zip(head[: len(MAGIC)], MAGIC, strict=True))
    return 0 < diff <= 4


def _damaged(what: str, index: int) -> DamagedFileError:
    return DamagedFileError(
        f"{what} is damaged or was tampered with (chunk {index} of the encrypted file fails authentication: "
        "changed, cut short, reordered or extended); restore it from a backup, or retrain the app / re-add the "
        "documents"
    )


def _open_chunks(f: BinaryIO, header: bytes, what: str) -> Iterator[bytes]:
    from cryptography.exceptions import InvalidTag

    chunk, key_id = _header_fields(header, what)
    aead = _aead(_opening_key(key_id, what), header[-16:])
    size = chunk + TAG
    cur = f.read(size)
    index = 0
    while True:
        nxt = f.read(size) if len(cur) == size else b""
        final = not nxt
        try:
            yield aead.decrypt(_nonce(index, final), cur, _aad(header, index, final))
        except InvalidTag:
            raise _damaged(what, index) from None
        if final:
            return
        cur, index = nxt, index + 1


def iter_plain(path: str | os.PathLike, block: int = 1 << 20) -> Iterator[bytes]:
    """A stored file's plaintext, piece by piece (decrypted when the file is encrypted, as it is otherwise)."""
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
        if head[: len(MAGIC)] == MAGIC and len(head) == HEADER.size:
            yield from _open_chunks(f, head, f"file '{path}'")
            return
        if head[: len(MAGIC)] == MAGIC or _near_magic(head):
            raise DamagedFileError(
                f"file '{path}' has a damaged encryption header; restore it from a backup, or retrain the app / "
                "re-add the documents"
            )
        yield head
        yield from iter(lambda: f.read(block), b"")


def iter_plain_views(path: str | os.PathLike) -> Iterator[memoryview]:
    """A stored file's plaintext as views of one reused buffer, each valid until the next is asked for: a reader
    that copies each piece where it belongs (weights into a model's tensors) allocates nothing per file. The
    same checks as iter_plain; a plaintext file is read as it is."""
    from cryptography.exceptions import InvalidTag

    with open(path, "rb") as f:
        head = f.read(HEADER.size)
        if head[: len(MAGIC)] != MAGIC or len(head) < HEADER.size:
            if head[: len(MAGIC)] == MAGIC or _near_magic(head):
                yield from (memoryview(p) for p in iter_plain(path))  # (raises: a damaged header)
                return
            yield memoryview(head)
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            while n := f.readinto(buf):
                yield view[:n]
            return
        what = f"file '{path}'"
        chunk, key_id = _header_fields(head, what)
        aead = _aead(_opening_key(key_id, what), head[-16:])
        size = chunk + TAG
        cbuf, pbuf = bytearray(2 * size), bytearray(chunk)
        cview, pview = memoryview(cbuf), memoryview(pbuf)
        got = f.readinto(cview[:size])
        index = 0
        while True:  # the next chunk is read ahead to know whether this one is the last
            nxt = f.readinto(cview[size : 2 * size]) if got == size else 0
            final = nxt == 0
            try:
                aead.decrypt_into(_nonce(index, final), cview[:got], _aad(head, index, final),
                                  pview[: max(got - TAG, 0)])
            except (InvalidTag, ValueError):
                raise _damaged(what, index) from None
            yield pview[: got - TAG]
            if final:
                return
            cview[:nxt] = cview[size : size + nxt]
            got, index = nxt, index + 1


def is_sealed(path: str | os.PathLike) -> bool:
    """Whether a stored file is in the encrypted format (by its header)."""
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def key_id_of(path: str | os.PathLike) -> bytes | None:
    """The id of the key a file is encrypted with (None: plaintext)."""
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
    if head[: len(MAGIC)] != MAGIC or len(head) < HEADER.size:
        return None
    return HEADER.unpack(head)[4]


def _decrypt_all(path: str | os.PathLike, alloc: Callable[[int], Any]) -> Any:
    """Every chunk of a stored file decrypted straight into alloc(plaintext size) (one buffer, no copies), or a
    plaintext file's bytes as they are. A cut or damaged file raises, naming the chunk (via iter_plain)."""
    from cryptography.exceptions import InvalidTag

    with open(path, "rb") as f:
        head = f.read(HEADER.size)
        if head[: len(MAGIC)] != MAGIC or len(head) < HEADER.size:
            if head[: len(MAGIC)] == MAGIC or _near_magic(head):
                return read_bytes_streamed(path)  # (raises: a damaged header)
            return head + f.read()  # plaintext: as it is (the caller copies it only if it needs its own buffer)
        what = f"file '{path}'"
        chunk, key_id = _header_fields(head, what)
        aead = _aead(_opening_key(key_id, what), head[-16:])
        body = os.fstat(f.fileno()).st_size - HEADER.size
        size = chunk + TAG
        n = max(1, -(-body // size))
        last = body - (n - 1) * size
        if last < TAG:  # cut inside a tag (or no chunk at all)
            read_bytes_streamed(path)  # (raises naming the damage)
            raise _damaged(what, n - 1)
        out = alloc(body - n * TAG)
        view, cview = memoryview(out), memoryview(bytearray(size))
        try:
            for i in range(n):
                final = i == n - 1
                got = f.readinto(cview[: last if final else size])
                try:
                    aead.decrypt_into(_nonce(i, final), cview[:got], _aad(head, i, final),
                                      view[i * chunk : i * chunk + got - TAG])
                except (InvalidTag, ValueError):
                    raise _damaged(what, i) from None
        finally:
            view.release()
    return out


def read_bytes(path: str | os.PathLike) -> bytes:
    """A stored file's plaintext bytes: the one read every loader of runs and knowledge bases goes through.
    (iter_plain's checks, with each chunk decrypted straight into one buffer: what a cold load of a run costs.)"""
    out = _decrypt_all(path, bytearray)
    return out if isinstance(out, bytes) else bytes(out)


def read_mapped(path: str | os.PathLike) -> mmap.mmap:
    """A stored file's plaintext in a fresh anonymous memory map, its pages allocated in one go (MAP_POPULATE):
    for loaders that wrap the plaintext without copying it (torch.frombuffer: luodi.train.streamed), so an
    encrypted file costs one decryption and nothing more. Same checks as read_bytes."""
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)

    def alloc(size: int) -> mmap.mmap:
        return mmap.mmap(-1, max(size, 1), flags=flags)  # (mmap cannot be empty: an empty file is a one-byte map)

    out = _decrypt_all(path, alloc)
    if isinstance(out, bytes):  # plaintext
        plain, out = out, alloc(len(out))
        out[: len(plain)] = plain
    return out


def read_bytes_streamed(path: str | os.PathLike) -> bytes:
    return b"".join(iter_plain(path))


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(read_bytes(path))


def seal_stream(out: BinaryIO, pieces: Iterable[bytes], key: Key, chunk: int = CHUNK) -> None:
    s = Sealer(out, key, chunk)
    for p in pieces:
        s.write(p)
    s.close()


def seal_bytes(data: bytes, key: Key | None = None, chunk: int = CHUNK) -> bytes:
    """`data` in the encrypted file format under `key` (default: the configured key)."""
    import io

    key = key or keyring().primary
    if key is None:
        raise EncryptionKeyError(f"no encryption key is set: {_FIX}", param=KEY_SETTING)
    buf = io.BytesIO()
    seal_stream(buf, [data], key, chunk)
    return buf.getvalue()


def stored_form(path: str | os.PathLike, data: bytes) -> bytes:
    """What luodi.atomic would store for `data` written to `path`: sealed under a protected folder when a key is
    set, else `data` itself (for writers that checksum the stored bytes before the swap: KB indexes)."""
    key = keyring().primary
    return seal_bytes(data, key) if key is not None and is_protected(path) else data


def rewrite(path: Path, key: Key) -> bool:
    """Re-encrypt one stored file under `key`, atomically (temp beside it, fsync, os.replace): a kill leaves the
    old file or the new one. Streams: memory stays at a few chunks. False when it already is under `key`."""
    if key_id_of(path) == key.id:
        return False
    with atomic.atomic_path(path, as_stored=True) as tmp, open(tmp, "wb") as out:
        seal_stream(out, iter_plain(path), key)
    return True


@contextmanager
def plain_dir(folder: str | os.PathLike, names: Iterable[str]) -> Iterator[Path]:
    """`folder` itself when none of its files `names` is encrypted; else those files' plaintext in a private
    temporary folder (in /dev/shm when it has room: luodi.atomic.plaintext_scratch), removed after the block. For
    libraries that read a whole folder (peft's adapters)."""
    folder = Path(folder)
    present = [n for n in names if (folder / n).is_file()]
    if not any(is_sealed(folder / n) for n in present):
        yield folder
        return
    with atomic.plaintext_scratch(folder, folder.name, "") as tmp:
        tmp.mkdir()
        for n in present:
            with open(tmp / n, "wb") as out:
                for piece in iter_plain(folder / n):
                    out.write(piece)
        yield tmp


_handles: dict[tuple[str, float], int] = {}


def plain_handle(path: str | os.PathLike) -> Path:
    """A path to an encrypted file's plaintext in anonymous memory (Linux memfd), open for the life of the
    process (one per file and modification time): for libraries that open a path themselves and keep reading it
    (llama.cpp serving a run's GGUF). A plaintext file's own path."""
    p = Path(path)
    if not is_sealed(p):
        return p
    key = (str(p.resolve()), p.stat().st_mtime)
    with _lock:
        fd = _handles.get(key)
        if fd is None:
            fd = os.memfd_create(p.name, 0)
            for piece in iter_plain(p):
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
            _handles[key] = fd
    return Path(f"/proc/{os.getpid()}/fd/{fd}")


# ---- which files are sealed: those written under a protected folder --------------------------------------

_extra_roots: set[Path] = set()


def protect_root(path: str | os.PathLike) -> None:
    """Also seal files written under `path` (a runs folder other than the default: train.output_dir)."""
    _extra_roots.add(Path(path).expanduser().absolute())


def protected_roots() -> list[Path]:
    s = get_settings()
    return [s.runs_dir.absolute(), (s.home / "kb").absolute(), *sorted(_extra_roots)]


def is_protected(path: str | os.PathLike) -> bool:
    p = Path(path).absolute()
    return any(p.is_relative_to(r) for r in protected_roots())


def _stored_form(path: Path):  # the filter luodi.atomic applies to every file it writes
    if not is_protected(path):
        return None
    key = keyring().primary
    if key is None:
        return None

    def seal(plain: Path, out_path: Path) -> None:
        with open(plain, "rb") as src, open(out_path, "wb") as out:
            seal_stream(out, iter(lambda: src.read(1 << 20), b""), key)

    return seal


atomic.set_store_filter(_stored_form)
