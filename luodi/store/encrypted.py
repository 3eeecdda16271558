"""Column types that store a value encrypted when an encryption key is set (luodi.crypto), in the column's own
SQL type: "ldenc1:<key id hex>:<base64(nonce + AES-256-GCM ciphertext)>" in a text column, the same string as a
JSON string in a JSON column. No migration is needed to turn encryption on, and rows written before stay readable
(a value without the tag is plaintext).

Each value gets a random 12-byte nonce; the column's name is its associated data, so a value copied into another
column fails authentication. Values are equal-length-leaking (AES-GCM keeps lengths) and cannot be searched in
SQL: only columns luodi never filters or sorts on are encrypted.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.types import TypeDecorator

from luodi import crypto

ENCRYPTED_COLUMNS: dict[str, tuple[str, ...]] = {}  # table -> columns, filled by the tables that use these types


def seal_value(text: str, label: str, key: crypto.Key | None = None) -> str:
    key = key or crypto.keyring().primary
    if key is None:
        return text
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    ct = AESGCM(key.secret).encrypt(nonce, text.encode(), f"{crypto.COLUMN_TAG}{label}".encode())
    return f"{crypto.COLUMN_TAG}{key.id_hex}:{base64.b64encode(nonce + ct).decode()}"


def is_sealed_value(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(crypto.COLUMN_TAG)


def value_key_id(value: Any) -> str | None:
    return value[len(crypto.COLUMN_TAG) : len(crypto.COLUMN_TAG) + 16] if is_sealed_value(value) else None


def open_value(value: str, label: str) -> str:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    what = f"stored value in {label}"
    try:
        key_hex, b64 = value[len(crypto.COLUMN_TAG) :].split(":", 1)
        key_id, blob = bytes.fromhex(key_hex), base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error):
        raise crypto.DamagedFileError(f"{what} is not a valid encrypted value (damaged); restore the store from "
                                      "a backup") from None
    key = crypto._opening_key(key_id, what)
    try:
        return AESGCM(key.secret).decrypt(blob[:12], blob[12:], f"{crypto.COLUMN_TAG}{label}".encode()).decode()
    except InvalidTag:
        raise crypto.DamagedFileError(f"{what} is damaged or was tampered with (fails authentication); restore "
                                      "the store from a backup") from None


class _Sealed(TypeDecorator):
    cache_ok = True

    def __init__(self, label: str, *args: Any, **kwargs: Any):
        self.label = label
        super().__init__(*args, **kwargs)

    def _seal(self, text: str) -> str:
        return seal_value(text, self.label)


class EncryptedText(_Sealed):
    """A Text column whose values are encrypted when a key is set. `label` ("table.column") is bound in."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else self._seal(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return open_value(value, self.label) if is_sealed_value(value) else value


class EncryptedString(EncryptedText):
    """A String(length) column, encrypted like EncryptedText. The ciphertext is longer than the text (about
    4/3 of it plus 52 characters): a text is shortened first so the stored value fits `length`."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None or crypto.keyring().primary is None or self.impl.length is None:
            return value
        room = (self.impl.length - 52) * 3 // 4 - 28  # what fits: tag + key id + base64(nonce + text + tag)
        raw = value.encode()
        if len(raw) > room:
            value = raw[:room].decode(errors="ignore")
        return self._seal(value)


class EncryptedJSON(_Sealed):
    """A JSON column whose value is stored as one encrypted JSON string when a key is set."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None or crypto.keyring().primary is None:
            return value
        return self._seal(json.dumps(value, ensure_ascii=False, default=str))

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return json.loads(open_value(value, self.label)) if is_sealed_value(value) else value


def encrypted(table: str, column: str, kind: type[_Sealed] = EncryptedText, *args: Any) -> _Sealed:
    """The column type for `table.column`, recorded in ENCRYPTED_COLUMNS (what key rotation rewrites)."""
    cols = ENCRYPTED_COLUMNS.setdefault(table, ())
    if column not in cols:
        ENCRYPTED_COLUMNS[table] = (*cols, column)
    return kind(f"{table}.{column}", *args)
