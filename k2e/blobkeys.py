"""What every BlobStore (k2e.blobstore, k2e.blobstore_s3) shares: the form of a key,
the description of a stored object, the size of a read, and how a file is written whole."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Reads and copies move this much at a time.
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key, size in bytes, and when it was written (epoch
    seconds) where the listing says."""

    key: str
    size: int
    mtime: float | None = None


def check_key(key: str) -> str:
    """``key`` if it is a relative POSIX path inside the store; ValueError otherwise."""
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or "\\" in key or "\0" in key:
        raise ValueError(f"not a storage key: {key!r}")
    return path.as_posix()


@contextmanager
def written_whole(dest: Path, prefix: str) -> Iterator[Path]:
    """A temporary path beside ``dest`` to write; renamed to ``dest`` when the block ends,
    removed if it raises, so a reader sees the old file or the whole new one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=prefix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
