"""Streamed archives of files from a job's model_dir: bounded memory whatever their size.

Two forms of the same POSIX tar: plain (``application/x-tar``), whose length is known
before the first byte, so it goes out with a Content-Length and nothing between the
page cache and the socket but large reads; and the contract's default tar.gz, the same
tar bytes through a stored (level 0) gzip stream.

A member is a local file (a Path) or an object in the bucket (:class:`Stored`, its size
known from the listing): the latter is opened only when the archive reaches it, its
bytes streamed from the bucket.
"""

import asyncio
import os
import tarfile
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from k2e.blobstore import BlobStore

CHUNK = 1024 * 1024
# Plain tar reads: 1 MB, as the gzip stream's. 2 MB reads were no faster within this
# machine's noise and eight concurrent downloads then grew the API by ~60 MB (1 MB: ~35 MB;
# bench/downloads.py): each response holds about two reads at a time.
TAR_CHUNK = CHUNK
COMPRESS_LEVEL = 0
# A few threads of their own for file reads: cheaper per read than anyio's pool, and few
# threads mean few malloc arenas holding freed read buffers (the API's memory).
_READERS = ThreadPoolExecutor(4, thread_name_prefix="k2e-archive-read")
_BLOCK = tarfile.BLOCKSIZE
_END = b"\0" * (2 * _BLOCK)


@dataclass(frozen=True)
class Stored:
    """An object in the store, as an archive member."""

    store: BlobStore
    key: str
    size: int
    mtime: float | None = None


@dataclass
class _Member:
    header: bytes
    file: BinaryIO | None
    size: int
    opener: Callable[[], BinaryIO] | None = None

    def opened(self) -> BinaryIO:
        if self.file is None:
            assert self.opener is not None
            self.file = self.opener()
        return self.file

    def finished(self) -> None:
        """A stored member's response is closed once it is sent (one connection at a
        time); a local file stays open until the plan's end, as it was opened."""
        if self.opener is not None and self.file is not None:
            self.file.close()


class TarPlan:
    """The members of one archive, their files opened when it is planned: a checkpoint
    that training rotates away meanwhile is still read whole (the open file keeps it)."""

    def __init__(self, members: Iterable[tuple[Path | Stored, str]]) -> None:
        self._members: list[_Member] = []
        try:
            for path, arcname in members:
                if isinstance(path, Stored):
                    self._members.append(_stored_member(path, arcname))
                    continue
                f = path.open("rb", buffering=0)
                try:
                    stat = os.fstat(f.fileno())
                except BaseException:
                    f.close()
                    raise
                info = tarfile.TarInfo(arcname)
                info.size = stat.st_size
                info.mtime = int(stat.st_mtime)
                info.mode = 0o644
                self._members.append(_Member(info.tobuf(format=tarfile.PAX_FORMAT), f, info.size))
        except BaseException:
            self.close()
            raise

    @property
    def length(self) -> int:
        """The plain tar's size in bytes."""
        return sum(len(m.header) + m.size + _padding(m.size) for m in self._members) + len(_END)

    def close(self) -> None:
        for member in self._members:
            if member.file is not None:
                member.file.close()

    def blocks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        """The plain tar, read synchronously; closes the files at the end."""
        try:
            for member in self._members:
                yield member.header
                left = member.size
                while left:
                    data = _read(member.opened(), min(chunk, left))
                    left -= len(data)
                    yield data
                member.finished()
                if _padding(member.size):
                    yield b"\0" * _padding(member.size)
            yield _END
        finally:
            self.close()

    async def stream(self, chunk: int = TAR_CHUNK) -> AsyncIterator[bytes]:
        """The plain tar for an ASGI response: file reads on a worker thread, never on
        the event loop; closes the files at the end or when the client goes away.

        Each member's next read starts before the current chunk goes out, so reading
        from disk or the bucket overlaps the socket write: at most two chunks per
        response, the one being sent and the one being read."""
        loop = asyncio.get_running_loop()
        ahead: Future[bytes] | None = None
        try:
            for member in self._members:
                left = member.size
                first = min(chunk, left)
                f = await loop.run_in_executor(_READERS, member.opened) if left else None
                data = await loop.run_in_executor(_READERS, _read, f, first) if first else b""
                left -= len(data)
                data = member.header + data  # one message for a small file
                while left:
                    ahead = _READERS.submit(_read, f, min(chunk, left))
                    yield data
                    data = await asyncio.wrap_future(ahead)
                    ahead = None
                    left -= len(data)
                yield data
                member.finished()
                if _padding(member.size):
                    yield b"\0" * _padding(member.size)
            yield _END
        finally:
            if ahead is None:
                self.close()
            else:
                # A read may still run on its thread: its file closes once it is done.
                ahead.add_done_callback(lambda _: self.close())


def tar_gz_stream(plan: TarPlan) -> Iterator[bytes]:
    """The plan's tar, gzip-compressed: a file the contract's ``.tar.gz`` clients read."""
    # Stored (level 0) gzip: checkpoint and SavedModel weights are float32 and barely
    # compress (~93% of the payload at level 6), while deflate at any level caps a
    # download near 20-25 MB/s on one core; stored blocks run at ~1.3 GB/s and are
    # still the contract's tar.gz. wbits 31: gzip framing.
    gz = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 31)
    for block in plan.blocks():
        out = gz.compress(block)
        if out:
            yield out
    yield gz.flush()


def tree_members(root: Path, prefix: str) -> list[tuple[Path, str]]:
    """Every file under ``root``, named ``prefix/relative/path`` in the archive."""
    return [
        (path, f"{prefix}/{path.relative_to(root).as_posix()}")
        for path in sorted(root.rglob("*"))
        if path.is_file()
    ]


def _stored_member(stored: Stored, arcname: str) -> _Member:
    info = tarfile.TarInfo(arcname)
    info.size = stored.size
    info.mtime = int(stored.mtime or 0)
    info.mode = 0o644
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    return _Member(header, None, stored.size, lambda: stored.store.open(stored.key))


def _read(f: BinaryIO | None, size: int) -> bytes:
    assert f is not None
    data = f.read(size)
    if not data:
        # The header promised more bytes than the file holds now (truncated in place):
        # end the response broken rather than send a tar that lies.
        raise OSError(f"{getattr(f, 'name', 'a file')} shrank while it was being sent")
    return data


def _padding(size: int) -> int:
    return (-size) % _BLOCK
