"""The plain tar an API download streams (``TarPlan.stream``): the next read starts
before the current chunk goes out, and the bytes are those of the synchronous tar."""

import asyncio
import io
import os
import tarfile
import threading
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from k2e.blobstore import LocalBlobStore
from service.archive import CHUNK, Stored, TarPlan

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5]


async def _collect(plan: TarPlan) -> bytes:
    return b"".join([piece async for piece in plan.stream()])


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_the_streamed_tar_holds_every_byte_around_chunk_boundaries(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "bucket")
    files: dict[str, bytes] = {}
    members: list[tuple[Path | Stored, str]] = []
    for n, size in enumerate(SIZES):
        data = os.urandom(size)
        local = tmp_path / f"local-{n}"
        local.write_bytes(data)
        members.append((local, f"local/{n}"))
        store.put_bytes(f"k/{n}", data)
        members.append((Stored(store, f"k/{n}", size), f"stored/{n}"))
        files[f"local/{n}"] = files[f"stored/{n}"] = data

    plan = TarPlan(members)
    streamed = asyncio.run(_collect(plan))
    assert len(streamed) == plan.length
    assert streamed == b"".join(TarPlan(members).blocks())
    assert _members(streamed) == files


class _CountingStore(LocalBlobStore):
    """Counts the reads of the objects it opens."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = 0
        self.lock = threading.Lock()

    def open(self, key: str) -> BinaryIO:
        f = super().open(key)
        inner = f.read

        def read(size: int = -1) -> bytes:
            with self.lock:
                self.reads += 1
            return inner(size)

        f.read = read  # type: ignore[method-assign]
        return f


def test_the_next_chunk_is_read_while_the_current_one_is_sent(tmp_path: Path) -> None:
    store = _CountingStore(tmp_path / "bucket")
    store.put_bytes("k/data", os.urandom(4 * CHUNK))
    plan = TarPlan([(Stored(store, "k/data", 4 * CHUNK), "data")])

    async def reads_after_first_chunk() -> int:
        stream = plan.stream()
        await stream.__anext__()  # the header and the first chunk, not yet sent on
        deadline = time.monotonic() + 5
        while store.reads < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # and no further read than the one ahead
        reads = store.reads
        await stream.aclose()
        return reads

    assert asyncio.run(reads_after_first_chunk()) == 2


def test_a_file_that_shrinks_while_streamed_ends_the_response_with_an_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "model.ckpt-1.data-00000-of-00001"
    path.write_bytes(os.urandom(3 * CHUNK + 5))
    plan = TarPlan([(path, path.name)])

    async def consume() -> None:
        stream = plan.stream()
        await stream.__anext__()
        os.truncate(path, CHUNK)  # the chunk read ahead may already hold CHUNK..2*CHUNK
        async for _ in stream:
            pass

    with pytest.raises(OSError, match="shrank while it was being sent"):
        asyncio.run(consume())
