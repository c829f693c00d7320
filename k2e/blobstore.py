"""Where stored files live: the local storage folder (the default) or an S3-compatible
bucket (``K2E_STORAGE_URL=s3://bucket/prefix``). Both answer the same calls, keyed by the
storage layout's relative paths (``tenants/<t>/models/<id>/model.h5``, see k2e.storage),
so an object in the bucket has the key its file has under the local root.

With the local folder, API and workers read and write the root directly (one machine or
a shared volume) and nothing is copied. With a bucket, each process keeps a local working
copy (uploads while they are inspected, a worker's cached inputs and model_dir) and the
bucket is the truth: what a process publishes there is what every other process sees.

A key is a relative POSIX path without ``..``; :func:`check_key` refuses anything else, so
no caller can name an object outside the store's root or prefix.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from k2e.blobkeys import CHUNK, ObjectInfo, check_key, written_whole
from k2e.errors import NotFound

if TYPE_CHECKING:
    from k2e.settings import Settings


class BlobStore(Protocol):
    """What k2e stores files in. ``local`` is True for the local folder, whose objects are
    the files under ``root``: callers that hold a Path may use it in place."""

    local: bool
    url: str

    def put_file(self, key: str, src: Path) -> None:
        """Store ``src``'s bytes under ``key``, whole or not at all (a reader never sees
        part of an object); replaces what was there."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_file(self, key: str, dest: Path) -> None:
        """Copy the object to ``dest`` (written to a temporary name, then renamed);
        NotFound when there is no such object."""
        ...

    def get_bytes(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO:
        """The object for reading, as a file object; NotFound when absent."""
        ...

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when there is no such object."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a folder: end it with ``/``)."""
        ...

    def delete(self, key: str) -> None:
        """Remove one object; absent is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; the count removed."""
        ...

    def presign(self, key: str, expires_s: int) -> str | None:
        """A URL that reads the object without k2e's credentials for ``expires_s``
        seconds, or None where the store has none (the local folder)."""
        ...

    def ping(self) -> None:
        """Raise unless the store answers (readiness)."""
        ...


class LocalBlobStore:
    """The local storage folder: each object is the file at ``root / key``."""

    local = True

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = self.root.as_uri()

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, key: str, src: Path) -> None:
        with written_whole(self.path(key), ".put-") as tmp:
            _copy(src, tmp)

    def put_bytes(self, key: str, data: bytes) -> None:
        with written_whole(self.path(key), ".put-") as tmp:
            tmp.write_bytes(data)

    def get_file(self, key: str, dest: Path) -> None:
        src = self.path(key)
        if not src.is_file():
            raise NotFound(f"no stored object {key}")
        with written_whole(dest, ".get-") as tmp:
            _copy(src, tmp)

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        try:
            return self.path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no stored object {key}") from None

    def size(self, key: str) -> int | None:
        try:
            path = self.path(key)
            return path.stat().st_size if path.is_file() else None
        except OSError:
            return None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder = self.root / check_key(prefix.rstrip("/") or ".")
        base = folder if prefix.endswith("/") or folder.is_dir() else folder.parent
        if not base.is_dir():
            return
        for dirpath, _, names in os.walk(base):
            for name in sorted(names):
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix) and not name.startswith((".put-", ".get-")):
                    try:
                        yield ObjectInfo(key, path.stat().st_size)
                    except FileNotFoundError:
                        continue

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        count = sum(1 for _ in self.list(prefix))
        folder = self.root / check_key(prefix.rstrip("/"))
        if prefix.endswith("/") and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        else:
            for info in list(self.list(prefix)):
                self.delete(info.key)
        return count

    def presign(self, key: str, expires_s: int) -> str | None:
        return None

    def ping(self) -> None:
        if not self.root.is_dir():
            raise OSError(f"the storage folder {self.root} does not exist")


def blob_store(settings: "Settings") -> BlobStore:
    """The store ``settings`` name: the local storage folder unless ``storage_url`` is an
    ``s3://`` URL."""
    url = settings.storage_url
    if not url:
        return LocalBlobStore(settings.storage_root)
    if url.startswith("s3://"):
        from k2e.blobstore_s3 import S3BlobStore

        return S3BlobStore.from_settings(settings)
    raise ValueError(f"K2E_STORAGE_URL must be unset or s3://bucket/prefix, not {url!r}")


def _copy(src: Path, dest: Path) -> None:
    with src.open("rb") as inp, dest.open("wb") as out:
        shutil.copyfileobj(inp, out, CHUNK)
