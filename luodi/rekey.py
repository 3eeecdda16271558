"""`luodi keys rotate-encryption`: re-encrypt everything stored under a new key, and survive being killed.

What it rewrites: every file under the runs folder(s) and the knowledge-base folder, and every encrypted store
column (luodi.store.encrypted.ENCRYPTED_COLUMNS). Plaintext written before encryption was turned on is encrypted
too, so the same command turns encryption on for existing data.

Why it is safe to kill: each file is rewritten on its own, atomically (temp beside it, fsync, os.replace), and its
header names its key, so a rerun with both keys skips what is already under the new key and finishes the rest.
A run's manifest (sha256 of each stored file) is rewritten last for that run; until then a file already under
the new key is checked by decrypting it (AES-GCM authenticates every chunk) and one still under an old key
against the manifest, so rotation never launders a tampered file. Store rows are rewritten in batches, one
transaction each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm.attributes import flag_modified

from luodi import atomic, crypto
from luodi.apps import registry
from luodi.settings import get_settings
from luodi.store import session_scope
from luodi.store.encrypted import ENCRYPTED_COLUMNS, is_sealed_value, value_key_id
from luodi.store.tables import Base

BATCH = 500


@dataclass
class RotationReport:
    files_rewritten: int = 0
    files_already_new: int = 0
    runs: int = 0
    rows: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"files_rewritten": self.files_rewritten, "files_already_new": self.files_already_new,
                "runs": self.runs, "rows": self.rows}


def _stored_files(root: Path) -> list[Path]:
    """Files luodi stores under `root` (not its hidden temp files, nor the KB write locks)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != "write.lock")


def _check(path: Path, new: crypto.Key, manifest_sha: str | None) -> None:
    """Refuse to re-encrypt a file that is not what luodi wrote."""
    if crypto.key_id_of(path) == new.id:
        for _ in crypto.iter_plain(path):  # authenticated chunk by chunk (DamagedFileError otherwise)
            pass
    elif manifest_sha is not None and atomic.sha256_file(path) != manifest_sha:
        raise registry.RunIntegrityError(
            f"'{path}' does not match its run's manifest (changed after training): not re-encrypting it; restore "
            "it from a backup or retrain the app, then run the rotation again"
        )


def rotate(
    new: crypto.Key, old: list[crypto.Key], after_file: Callable[[Path, int], None] | None = None
) -> RotationReport:
    """Re-encrypt every stored file and encrypted column under `new`; `old`: the keys data may still be under.
    `after_file(path, n)` is called after each rewritten file (progress; tests stop the process there)."""
    rep = RotationReport()
    s = get_settings()
    with crypto.using_keys(new, *old):
        seen: set[Path] = set()
        for run in registry.list_runs():
            run_dir = Path(run.path)
            if run_dir.is_dir():
                _rotate_run(run_dir, new, rep, after_file)
                seen.add(run_dir.resolve())
        for root in crypto.protected_roots():
            if not root.is_dir():
                continue
            for p in _stored_files(root):
                if any(p.resolve().is_relative_to(r) for r in seen):
                    continue
                if root.resolve().is_relative_to((s.home / "kb").resolve()) and p.name == "vectors.faiss":
                    continue  # rewritten with its checksum below
                _rotate_file(p, new, rep, after_file)
        _rotate_kbs(rep, after_file)
        _rotate_columns(new, rep)
    return rep


def _rotate_file(p: Path, new: crypto.Key, rep: RotationReport, after_file) -> None:
    if crypto.rewrite(p, new):
        rep.files_rewritten += 1
        if after_file:
            after_file(p, rep.files_rewritten)
    else:
        rep.files_already_new += 1


def _rotate_run(run_dir: Path, new: crypto.Key, rep: RotationReport, after_file) -> None:
    mp = run_dir / registry.MANIFEST
    man = crypto.read_json(mp) if mp.exists() else None
    listed = (man or {}).get("files", {})
    for p in _stored_files(run_dir):
        if p == mp:
            continue
        rel = str(p.relative_to(run_dir))
        _check(p, new, listed.get(rel, {}).get("sha256"))
        _rotate_file(p, new, rep, after_file)
    if man is not None:  # last: the manifest with the stored files' new checksums, under the new key
        for rel, meta in listed.items():
            p = run_dir / rel
            if p.exists():
                meta["sha256"], meta["bytes"] = atomic.sha256_file(p), p.stat().st_size
        atomic.write_json(mp, man)
    rep.runs += 1


def _rotate_kbs(rep: RotationReport, after_file) -> None:
    """Each KB's vectors through luodi.rag.index (under its lock, with its checksum file), when not yet new."""
    from luodi.rag import index
    from luodi.rag.kbs import kb_dir, kb_lock
    from luodi.store.tables import KnowledgeBase

    with session_scope() as s:
        names = list(s.scalars(select(KnowledgeBase.name)).all())
    key = crypto.keyring().primary
    for name in names:
        path = kb_dir(name) / index.INDEX_FILE
        if not path.exists():
            continue
        if crypto.key_id_of(path) == key.id:
            rep.files_already_new += 1
            continue
        with kb_lock(name):
            index.write_vectors(name, index.read_vectors(name, 0))
            index.forget(name)
        rep.files_rewritten += 1
        if after_file:
            after_file(path, rep.files_rewritten)


def _model_of(table: str) -> Any:
    for m in Base.registry.mappers:
        if m.local_table.name == table:
            return m.class_
    raise KeyError(table)


def _raw_key_id(raw: Any) -> str | None:
    """The key id of a stored value as the database returns it (a JSON column's value is still JSON text)."""
    if isinstance(raw, str) and raw.startswith('"'):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    return value_key_id(raw) if is_sealed_value(raw) else None


def _rotate_columns(new: crypto.Key, rep: RotationReport) -> None:
    """Rewrite each encrypted column's values not yet under `new`, in batches of one transaction each."""
    for table, cols in ENCRYPTED_COLUMNS.items():
        model = _model_of(table)
        done, last = 0, None
        while True:
            with session_scope() as s:
                where = "" if last is None else "WHERE id > :last "
                rows = s.execute(
                    text(f"SELECT id, {', '.join(cols)} FROM {table} {where}ORDER BY id LIMIT {BATCH}"),
                    {} if last is None else {"last": last},
                ).all()
                if not rows:
                    break
                last = rows[-1][0]
                for row in rows:
                    stale = [c for c, raw in zip(cols, row[1:], strict=True)
                             if raw is not None and _raw_key_id(raw) != new.id_hex]
                    if not stale:
                        continue
                    obj = s.get(model, row[0])
                    for c in stale:
                        flag_modified(obj, c)  # written again: sealed under the new key on the way
                    done += 1
        rep.rows[table] = done


def fingerprint(path: Path) -> str:
    """sha256 of a stored file's plaintext (tests compare contents across a rotation)."""
    h = hashlib.sha256()
    for piece in crypto.iter_plain(path):
        h.update(piece)
    return h.hexdigest()
