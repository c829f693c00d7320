"""The API process's cache of credential lookups: the caller an API key names
(``KeyCache``) and the session a dashboard cookie names (``SessionCache``), both in
service/auth.py, each kept ``key_cache_s``.

Entries are keyed by the secret's hash (k2e.tenancy.keys.key_hash), never the secret.
A "not found" answer (None) is cached like any other, so that guessing secrets costs
the store nothing more than a valid one does. The cache is bounded: full, it is cleared.
"""

import time
from collections.abc import Callable
from typing import Generic, TypeVar

MAX_ENTRIES = 10_000

V = TypeVar("V")


class TtlCache(Generic[V]):
    """Digest -> (value or None, expiry)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[V | None, float]] = {}

    def get(self, digest: str) -> tuple[bool, V | None]:
        """(True, the cached answer), or (False, None) when there is none or it expired."""
        entry = self._entries.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return False, None
        return True, entry[0]

    def put(self, digest: str, value: V | None) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = (value, time.monotonic() + self.ttl_s)

    def forget(self, digest: str) -> None:
        self._entries.pop(digest, None)

    def forget_where(self, matches: Callable[[V], bool]) -> None:
        """Forget every found answer that ``matches`` (cached "not found"s stay)."""
        for digest, (value, _) in list(self._entries.items()):
            if value is not None and matches(value):
                self._entries.pop(digest, None)
