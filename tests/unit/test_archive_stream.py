"""The plain tar an API download streams (``TarPlan.stream``): a bucket object's reads
run ahead of the socket, local files come from the page cache or a reader thread, and
the bytes are those of the synchronous tar."""

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
from service import archive
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
    """Counts the reads of the objects it opens; each read answers at most ``most``
    bytes, as a response body may."""

    def __init__(self, root: Path, most: int | None = None) -> None:
        super().__init__(root)
        self.reads = 0
        self.most = most
        self.lock = threading.Lock()

    def open(self, key: str) -> BinaryIO:
        f = super().open(key)
        inner = f.read

        def read(size: int = -1) -> bytes:
            with self.lock:
                self.reads += 1
            return inner(size if self.most is None else min(size, self.most))

        f.read = read  # type: ignore[method-assign]
        return f


READ = 1000


def test_a_bucket_object_holds_every_byte_across_its_reads_short_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive, "STORED_READ", READ)
    store = _CountingStore(tmp_path / "bucket", most=700)
    data = os.urandom(10 * READ + 5)
    store.put_bytes("k/data", data)
    members: list[tuple[Path | Stored, str]] = [(Stored(store, "k/data", len(data)), "data")]

    streamed = asyncio.run(_collect(TarPlan(members)))
    assert streamed == b"".join(TarPlan(members).blocks())
    assert _members(streamed) == {"data": data}


def test_stored_ahead_reads_are_made_before_the_first_is_sent_and_no_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive, "STORED_READ", READ)
    store = _CountingStore(tmp_path / "bucket")
    store.put_bytes("k/data", os.urandom(20 * READ))
    plan = TarPlan([(Stored(store, "k/data", 20 * READ), "data")])

    async def reads_after_first_piece() -> int:
        stream = plan.stream()
        await stream.__anext__()  # the header and the first read, not yet sent on
        deadline = time.monotonic() + 5
        while store.reads < archive.STORED_AHEAD and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # and no further read than those ahead
        reads = store.reads
        await stream.aclose()
        return reads

    assert asyncio.run(reads_after_first_piece()) == archive.STORED_AHEAD


@pytest.mark.parametrize("cached", [True, False])
def test_local_files_hold_the_same_bytes_read_from_the_cache_or_on_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: bool
) -> None:
    """A chunk in the page cache is read on the event loop, one that is not on a reader
    thread: the archive is the same."""
    monkeypatch.setattr(archive, "_in_cache", lambda fd, offset, size: cached)
    members: list[tuple[Path | Stored, str]] = []
    files = {}
    for n, size in enumerate(SIZES):
        path = tmp_path / f"f{n}"
        path.write_bytes(os.urandom(size))
        members.append((path, f"f/{n}"))
        files[f"f/{n}"] = path.read_bytes()
    streamed = asyncio.run(_collect(TarPlan(members)))
    assert streamed == b"".join(TarPlan(members).blocks())
    assert _members(streamed) == files


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="reads without waiting: Linux")
def test_a_chunk_just_written_is_found_in_the_page_cache(tmp_path: Path) -> None:
    path = tmp_path / "hot"
    path.write_bytes(os.urandom(3 * CHUNK))
    with path.open("rb") as f:
        assert archive._in_cache(f.fileno(), CHUNK, CHUNK)
        assert not archive._in_cache(f.fileno(), 3 * CHUNK, CHUNK)  # past its end


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
