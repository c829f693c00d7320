"""The plain tar an API download streams (``TarPlan.stream``): bucket objects come in
ranges fetched several at once, local files from the page cache or a reader thread, and
the bytes are those of the synchronous tar."""

import asyncio
import io
import os
import tarfile
import threading
import time
from pathlib import Path

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


class _RangeStore(LocalBlobStore):
    """Records the ranges read; the first ``together`` of them wait for one another (each
    returns only once that many are being read at the same time)."""

    def __init__(self, root: Path, together: int = 1) -> None:
        super().__init__(root)
        self.ranges: list[tuple[int, int]] = []
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(together, timeout=30)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with self.lock:
            self.ranges.append((start, length))
            first = len(self.ranges) <= self.barrier.parties
        if first:
            self.barrier.wait()
        return super().read_range(key, start, length)


PART = 1000


def test_a_bucket_object_is_fetched_in_ranges_several_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive, "STORED_PART", PART)
    store = _RangeStore(tmp_path / "bucket", together=archive.STORED_AHEAD)
    data = os.urandom(10 * PART + 5)
    store.put_bytes("k/data", data)
    members: list[tuple[Path | Stored, str]] = [(Stored(store, "k/data", len(data)), "data")]

    streamed = asyncio.run(_collect(TarPlan(members)))  # the barrier: STORED_AHEAD at once
    assert streamed == b"".join(TarPlan(members).blocks())
    assert _members(streamed) == {"data": data}
    assert sorted(store.ranges) == [(i * PART, PART) for i in range(10)] + [(10 * PART, 5)]


def test_no_more_ranges_than_stored_ahead_are_read_before_they_are_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive, "STORED_PART", PART)
    store = _RangeStore(tmp_path / "bucket")
    store.put_bytes("k/data", os.urandom(20 * PART))
    plan = TarPlan([(Stored(store, "k/data", 20 * PART), "data")])

    async def ranges_after_first_piece() -> int:
        stream = plan.stream()
        await stream.__anext__()  # the header and the first range, not yet sent on
        deadline = time.monotonic() + 5
        while len(store.ranges) < archive.STORED_AHEAD and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # and no further range than those ahead
        ranges = len(store.ranges)
        await stream.aclose()
        return ranges

    assert asyncio.run(ranges_after_first_piece()) == archive.STORED_AHEAD


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
