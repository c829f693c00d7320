"""The shipped bucket store (k2e.blobstore_s3.S3BlobStore) on a test S3 server, and a
wrapper that records every call that moves bytes, in order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from k2e.blobstore import BlobStore, ObjectInfo
from k2e.blobstore_s3 import S3BlobStore
from tests.support.s3_server import S3Server, boto_client


def s3_store(server: S3Server, prefix: str) -> S3BlobStore:
    """The store k2e builds from ``server.env(prefix)``, with the test credentials."""
    return S3BlobStore(
        server.bucket, prefix, endpoint_url=server.endpoint, client=boto_client(server)
    )


class RecordingStore:
    """``store``, with every put, get and delete appended to ``calls`` as (call, key)."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.local = store.local
        self.url = store.url
        self.calls: list[tuple[str, str]] = []

    def put_file(self, key: str, src: Path) -> None:
        self.calls.append(("put", key))
        self.store.put_file(key, src)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.calls.append(("put", key))
        self.store.put_bytes(key, data)

    def get_file(self, key: str, dest: Path) -> None:
        self.calls.append(("get", key))
        self.store.get_file(key, dest)

    def get_bytes(self, key: str) -> bytes:
        self.calls.append(("get", key))
        return self.store.get_bytes(key)

    def open(self, key: str) -> BinaryIO:
        self.calls.append(("get", key))
        return self.store.open(key)

    def size(self, key: str) -> int | None:
        return self.store.size(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.store.list(prefix)

    def delete(self, key: str) -> None:
        self.calls.append(("delete", key))
        self.store.delete(key)

    def delete_prefix(self, prefix: str) -> int:
        self.calls.append(("delete", prefix))
        return self.store.delete_prefix(prefix)

    def presign(self, key: str, expires_s: int) -> str | None:
        return self.store.presign(key, expires_s)

    def ping(self) -> None:
        self.store.ping()

    def keys(self, call: str) -> list[str]:
        return [key for made, key in self.calls if made == call]
