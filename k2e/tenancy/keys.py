"""API key secrets: generated with a recognizable prefix, stored as a hash only.

A key is found by an id derived from its hash (a prefix of it), and then compared in
full with ``hmac.compare_digest``: the lookup reveals nothing of the secret, and the
comparison takes the same time wherever the two hashes differ.
"""

import hashlib
import hmac
import secrets

PREFIX = "k2e_"
MIN_LENGTH = 20


def new_key() -> str:
    """A fresh key: ``k2e_`` and 43 URL-safe characters (256 bits)."""
    return PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """The stored form of a secret k2e hands out, an API key or a dashboard session's
    cookie token (k2e.tenancy.sessions): the SHA-256 (hex) of its UTF-8 bytes, lone
    surrogates kept so that any string hashes. The stores keep only this, and the API's
    caches (service/auth.py) are keyed by it."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_id(key: str) -> str:
    """The public id of a key: the first 16 hex digits of its hash."""
    return key_hash(key)[:16]


def matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(key_hash(key), stored_hash)
