"""The ``cursor`` of the lists (GET /jobs, /models, /datasets): opaque, and valid only for
the list it came from.

A list is read newest first by the store's row number (``seq``), which counts every
tenant's rows: shown as it is, two cursors a few minutes apart would tell a tenant how
many jobs or uploads the others made meanwhile. So a cursor carries its position
encrypted (the row number XOR a pad drawn from a random nonce) and authenticated (an
HMAC over the list, the tenant it shows, the nonce and the ciphertext). A cursor of
another tenant's list, of another kind of list, an altered one, or a cursor of an older
k2e (decimal digits) is refused: 422 naming ``cursor``.

The key is a random secret kept in the store (``k2e_secrets``), made by the first process
that needs it, so that every API process accepts the cursors of the others.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from k2e.errors import FieldError, InvalidInput
from k2e.tables import server_secrets

_VERSION = b"\x01"
_NONCE = 12
_TAG = 16
_LENGTH = 1 + _NONCE + 8 + _TAG
_SECRET_NAME = "cursor"
ALL_TENANTS = "*"


def invalid_cursor() -> InvalidInput:
    return InvalidInput(
        "`cursor` must be the `next_cursor` of a previous page of this same list",
        [
            FieldError(
                ("query", "cursor"),
                "not a cursor of this list: from another list or tenant, altered, or from "
                "an older k2e (start again from the first page)",
            )
        ],
    )


class CursorCodec:
    """Encodes and checks the cursors of one store's lists."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._keys: tuple[bytes, bytes] | None = None

    def encode(self, kind: str, tenant: str | None, seq: int) -> str:
        """The cursor after row ``seq`` of ``kind``'s list as ``tenant`` sees it (None:
        every tenant's)."""
        pad_key, tag_key = self._key_pair()
        nonce = secrets.token_bytes(_NONCE)
        body = _VERSION + nonce + _xor(struct.pack(">q", seq), _pad(pad_key, nonce))
        tag = _tag(tag_key, kind, tenant, body)
        return base64.urlsafe_b64encode(body + tag).decode().rstrip("=")

    def decode(self, kind: str, tenant: str | None, cursor: str) -> int:
        """The row a cursor stands for; InvalidInput (naming ``cursor``) unless it was
        issued for this list."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise invalid_cursor() from None
        if len(raw) != _LENGTH or raw[:1] != _VERSION:
            raise invalid_cursor()
        body, tag = raw[:-_TAG], raw[-_TAG:]
        pad_key, tag_key = self._key_pair()
        if not hmac.compare_digest(tag, _tag(tag_key, kind, tenant, body)):
            raise invalid_cursor()
        nonce, sealed = body[1 : 1 + _NONCE], body[1 + _NONCE :]
        return int(struct.unpack(">q", _xor(sealed, _pad(pad_key, nonce)))[0])

    def _key_pair(self) -> tuple[bytes, bytes]:
        if self._keys is None:
            secret = _stored_secret(self.engine)
            self._keys = (
                hmac.new(secret, b"k2e cursor pad", hashlib.sha256).digest(),
                hmac.new(secret, b"k2e cursor tag", hashlib.sha256).digest(),
            )
        return self._keys


def _pad(key: bytes, nonce: bytes) -> bytes:
    return hmac.new(key, nonce, hashlib.sha256).digest()[:8]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _tag(key: bytes, kind: str, tenant: str | None, body: bytes) -> bytes:
    scope = f"{kind}\0{ALL_TENANTS if tenant is None else tenant}\0".encode()
    return hmac.new(key, scope + body, hashlib.sha256).digest()[:_TAG]


def _stored_secret(engine: Engine) -> bytes:
    """The store's cursor key, made on first use (the first writer wins a race)."""
    query = select(server_secrets.c.value).where(server_secrets.c.name == _SECRET_NAME)
    with engine.connect() as conn:
        value = conn.execute(query).scalar_one_or_none()
    if value is None:
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(server_secrets).values(name=_SECRET_NAME, value=secrets.token_hex(32))
                )
        except IntegrityError:
            pass  # another process made it first
        with engine.connect() as conn:
            value = conn.execute(query).scalar_one()
    return bytes.fromhex(value)
