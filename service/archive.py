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
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import BinaryIO

from k2e.blobstore import BlobStore

CHUNK = 1024 * 1024
# Plain tar reads of local files: 1 MB (bench/STORAGE.md: larger reads were no faster,
# and the API grows by about two of them per download).
TAR_CHUNK = CHUNK
# Bucket objects: one GET read in STORED_READ-byte reads, STORED_AHEAD of them queued
# ahead of the socket, so the bucket's answer keeps arriving while the API sends (1 MB
# reads one ahead ran at 0.6-0.8 of boto3's get_object; several ranged GETs at once
# cost the API twice the CPU per byte, on cores it shares with the bucket). The API
# holds at most STORED_AHEAD + 1 reads per download.
STORED_READ = 4 * 1024 * 1024
STORED_AHEAD = 3
COMPRESS_LEVEL = 0
# Threads of their own for reads that would block: cheaper per read than anyio's pool,
# and few threads mean few malloc arenas holding freed read buffers (the API's memory).
_READERS = ThreadPoolExecutor(4, thread_name_prefix="k2e-archive-read")
_BLOCK = tarfile.BLOCKSIZE
_END = b"\0" * (2 * _BLOCK)
# Reads that return at once or not at all (Linux): is a chunk in the page cache?
_NOWAIT = getattr(os, "RWF_NOWAIT", None)
_PROBE = bytearray(1)


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
    stored: Stored | None = None
    # A stored member's close, queued behind its reads on their thread (TarPlan.stream).
    closing: "Future[None] | None" = None

    def opened(self) -> BinaryIO:
        if self.file is None:
            assert self.stored is not None
            self.file = self.stored.store.open(self.stored.key)
        return self.file

    def finished(self) -> None:
        """A stored member's response is closed once it is sent (one connection at a
        time); a local file stays open until the plan's end, as it was opened."""
        if self.stored is not None and self.file is not None:
            self.file.close()
            self.file = None


class TarPlan:
    """The members of one archive, their files opened when it is planned: a checkpoint
    that training rotates away meanwhile is still read whole (the open file keeps it)."""

    def __init__(self, members: Iterable[tuple[Path | Stored, str]]) -> None:
        self._members: list[_Member] = []
        # Reads still running on a thread when the response ends: the files close after.
        self._reading: set[Future[bytes]] = set()
        try:
            for path, arcname in members:
                if isinstance(path, Stored):
                    header = _header(arcname, path.size, path.mtime or 0)
                    self._members.append(_Member(header, None, path.size, path))
                    continue
                f = path.open("rb", buffering=0)
                try:
                    stat = os.fstat(f.fileno())
                except BaseException:
                    f.close()
                    raise
                header = _header(arcname, stat.st_size, stat.st_mtime)
                self._members.append(_Member(header, f, stat.st_size))
        except BaseException:
            self.close()
            raise

    @property
    def length(self) -> int:
        """The plain tar's size in bytes."""
        return sum(len(m.header) + m.size + _padding(m.size) for m in self._members) + len(_END)

    def close(self) -> None:
        """Closes the files; while a read still runs on a thread, once it is done."""
        running = [future for future in self._reading if not future.done()]
        if running:
            running[0].add_done_callback(lambda _: self.close())
            return
        for member in self._members:
            if member.file is not None and member.closing is None:
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
        """The plain tar for an ASGI response; closes the files at the end or when the
        client goes away.

        A local file's chunk that is in the page cache is read on the event loop (no
        thread hand-off: with several downloads at once, the hand-offs cost more than
        the reads); one that is not is read on a reader thread, never blocking the loop
        on the disk. A bucket object's reads run ahead of the socket (STORED_AHEAD)."""
        try:
            for member in self._members:
                header = member.header
                if member.stored is not None:
                    pieces = self._object_reads(member)
                else:
                    pieces = self._reads(member, chunk)
                async with aclosing(pieces):
                    async for data in pieces:
                        yield header + data if header else data  # one message for a small file
                        header = b""
                if header:
                    yield header  # an empty file
                if _padding(member.size):
                    yield b"\0" * _padding(member.size)
            yield _END
        finally:
            self.close()

    async def _reads(self, member: _Member, chunk: int) -> AsyncGenerator[bytes, None]:
        """A local file's bytes in ``chunk``-sized reads."""
        assert member.file is not None
        fd = member.file.fileno()
        offset = 0
        while offset < member.size:
            size = min(chunk, member.size - offset)
            if _in_cache(fd, offset, size):
                data = os.pread(fd, size, offset)
            else:
                data = await self._on_thread(_READERS.submit(os.pread, fd, size, offset))
            if not data:
                # The header promised more bytes than the file holds now (truncated in
                # place): end the response broken rather than send a tar that lies.
                raise OSError(f"{member.file.name} shrank while it was being sent")
            offset += len(data)
            yield data

    async def _object_reads(self, member: _Member) -> AsyncGenerator[bytes, None]:
        """A bucket object's bytes from one GET, in STORED_READ-byte reads made in order
        on a thread of the object's own, up to STORED_AHEAD of them ahead of the socket."""
        reader = ThreadPoolExecutor(1, thread_name_prefix="k2e-archive-object")
        ahead: deque[Future[bytes]] = deque()
        sizes = iter(_pieces(member.size, STORED_READ))
        try:
            opened = reader.submit(member.opened)
            await asyncio.wrap_future(opened)
            f = member.file
            while True:
                for size in islice(sizes, STORED_AHEAD - len(ahead)):
                    ahead.append(reader.submit(_read_whole, f, size))
                if not ahead:
                    return
                data = await asyncio.wrap_future(ahead[0])
                ahead.popleft()
                yield data
        finally:
            for future in ahead:
                future.cancel()  # a read already running ends on its own, then the close
            # The response body closes on its thread, after a read still running there.
            member.closing = reader.submit(member.finished)
            reader.shutdown(wait=False)

    async def _on_thread(self, future: "Future[bytes]") -> bytes:
        self._reading.add(future)
        future.add_done_callback(self._reading.discard)
        return await asyncio.wrap_future(future)


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


def _header(arcname: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(arcname)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _in_cache(fd: int, offset: int, size: int) -> bool:
    """Whether the first and last bytes of ``size`` at ``offset`` are in the page cache
    (then the kernel's read-ahead has the rest): read them without waiting for the disk."""
    if _NOWAIT is None:
        return False
    try:
        return all(os.preadv(fd, [_PROBE], at, _NOWAIT) == 1 for at in (offset, offset + size - 1))
    except OSError:  # EAGAIN: on the disk (or a file system that cannot tell)
        return False


def _pieces(size: int, piece: int) -> Iterator[int]:
    """The sizes of ``size`` bytes read ``piece`` at a time."""
    for start in range(0, size, piece):
        yield min(piece, size - start)


def _read(f: BinaryIO | None, size: int) -> bytes:
    assert f is not None
    data = f.read(size)
    if not data:
        # The header promised more bytes than the file holds now (truncated in place):
        # end the response broken rather than send a tar that lies.
        raise OSError(f"{getattr(f, 'name', 'a file')} shrank while it was being sent")
    return data


def _read_whole(f: BinaryIO | None, size: int) -> bytes:
    """``size`` bytes (a response body may answer a read with fewer)."""
    data = _read(f, size)
    while len(data) < size:
        data += _read(f, size - len(data))
    return data


def _padding(size: int) -> int:
    return (-size) % _BLOCK
