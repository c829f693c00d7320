"""Publishing a job's checkpoints to the bucket off the training thread (worker/sync.py's
CheckpointPublisher on worker/publish_queue.py), and an export whose upload failed. The
bucket is the local folder behind a store whose uploads wait until the test lets them."""

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError

from k2e.blobstore import LocalBlobStore
from k2e.blobstore_s3 import unavailable
from k2e.storage import Storage
from worker.cache import InputCache
from worker.sync import (
    BucketDir,
    CheckpointPublisher,
    export_in_bucket,
    fetch_newest_export,
    publish_export,
    publish_files,
)

# How long an upload waits for the test to let it through: only a guard against a hang.
GUARD_S = 10


class HeldStore(LocalBlobStore):
    """The local folder standing in for a bucket: each upload waits for ``gate``, then
    fails with ``error`` when one is set, or is stored and its key recorded."""

    local = False

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.error: BaseException | None = None
        self.puts: list[str] = []

    def put_file(self, key: str, src: Path) -> None:
        self._wait(key)
        super().put_file(key, src)
        self.puts.append(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._wait(key)
        super().put_bytes(key, data)
        self.puts.append(key)

    def _wait(self, key: str) -> None:
        self.gate.wait(GUARD_S)
        if self.error is not None:
            raise self.error


@pytest.fixture
def store(tmp_path: Path) -> HeldStore:
    return HeldStore(tmp_path / "bucket")


@pytest.fixture
def later() -> Iterator[list[threading.Timer]]:
    """Timers a test starts (to open a gate while the job's thread waits), joined after."""
    timers: list[threading.Timer] = []
    yield timers
    for timer in timers:
        timer.cancel()
        timer.join()


def _open_soon(store: HeldStore, later: list[threading.Timer]) -> None:
    timer = threading.Timer(0.2, store.gate.set)
    later.append(timer)
    timer.start()


def _save(model_dir: Path, step: int, kept: list[int]) -> None:
    """What a Saver leaves after saving ``step``: its data and index, and a state file
    naming it and the older ones it keeps (by absolute path, as TensorFlow writes it)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    name = f"model.ckpt-{step}"
    (model_dir / f"{name}.data-00000-of-00001").write_bytes(b"d" * (100 + step))
    (model_dir / f"{name}.index").write_bytes(b"i" * step)
    lines = [f'model_checkpoint_path: "{model_dir / name}"']
    lines += [f'all_model_checkpoint_paths: "{model_dir}/model.ckpt-{s}"' for s in kept]
    (model_dir / "checkpoint").write_text("\n".join(lines) + "\n")


def _publisher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("publish-")]


def _newest_in_state(store: HeldStore, bucket: BucketDir) -> str:
    state = store.get_bytes(bucket.object("checkpoint")).decode()
    return re.search(r'model_checkpoint_path: "([^"]*)"', state)[1]  # type: ignore[index]


def test_checkpoints_publish_off_the_training_thread_in_order_and_training_end_waits(
    store: HeldStore, tmp_path: Path, later: list[threading.Timer]
) -> None:
    bucket = BucketDir(store, "t1", "jobs/a")
    model_dir = tmp_path / "scratch"
    publisher = CheckpointPublisher(bucket, model_dir)
    for step in (1, 2, 3):
        _save(model_dir, step, kept=list(range(1, step + 1)))
        publisher.after_save(None, step)
    # Training went on through three saves while the bucket had taken nothing.
    assert store.puts == []
    assert publisher.published == []

    _open_soon(store, later)
    publisher.end(None, 3)  # training's end waits for the queued checkpoints
    assert publisher.published == [1, 2, 3]
    assert _publisher_threads() == []
    # In save order, each checkpoint's data before its index, its index before the state
    # file naming it; the state file each time as that save left it, never naming a
    # checkpoint not yet uploaded.
    checkpoint_puts = [k.rsplit("/", 1)[1] for k in store.puts if "events" not in k]
    assert checkpoint_puts == [
        "model.ckpt-1.data-00000-of-00001",
        "model.ckpt-1.index",
        "checkpoint",
        "model.ckpt-2.data-00000-of-00001",
        "model.ckpt-2.index",
        "checkpoint",
        "model.ckpt-3.data-00000-of-00001",
        "model.ckpt-3.index",
        "checkpoint",
    ]
    assert _newest_in_state(store, bucket) == "model.ckpt-3"


def test_a_checkpoint_the_saver_removed_before_its_upload_is_skipped(
    store: HeldStore, tmp_path: Path
) -> None:
    bucket = BucketDir(store, "t1", "jobs/b")
    model_dir = tmp_path / "scratch"
    publisher = CheckpointPublisher(bucket, model_dir)
    _save(model_dir, 1, kept=[1])
    publisher.after_save(None, 1)  # its upload starts, and waits for the bucket
    _save(model_dir, 2, kept=[2])
    publisher.after_save(None, 2)
    for path in model_dir.glob("model.ckpt-1.*"):  # keep_checkpoint_max=1
        path.unlink()
    store.gate.set()
    publisher.end(None, 2)
    assert publisher.published == [2]
    assert _newest_in_state(store, bucket) == "model.ckpt-2"
    assert not [info.key for info in store.list(bucket.object("model.ckpt-1."))]
    assert _publisher_threads() == []


def test_an_upload_failure_fails_the_training_thread_with_the_buckets_error(
    store: HeldStore, tmp_path: Path
) -> None:
    bucket = BucketDir(store, "t1", "jobs/c")
    model_dir = tmp_path / "scratch"
    publisher = CheckpointPublisher(bucket, model_dir)
    store.error = EndpointConnectionError(endpoint_url="http://bucket.invalid")
    _save(model_dir, 1, kept=[1])
    publisher.after_save(None, 1)  # queued: the failure comes later, in the publisher
    store.gate.set()
    with pytest.raises(EndpointConnectionError) as raised:
        publisher.end(None, 1)
    # The bucket's own error, which the job records as StorageUnavailable.
    assert raised.value is store.error
    assert unavailable(raised.value)
    assert _publisher_threads() == []
    # A save after the failure fails at once: training does not go on without the bucket.
    _save(model_dir, 2, kept=[1, 2])
    with pytest.raises(EndpointConnectionError):
        publisher.after_save(None, 2)
    assert publisher.published == []
    assert store.puts == []


def test_a_failed_or_stopped_training_waits_for_its_queued_checkpoints(
    store: HeldStore, tmp_path: Path, later: list[threading.Timer]
) -> None:
    bucket = BucketDir(store, "t1", "jobs/d")
    model_dir = tmp_path / "scratch"
    with pytest.raises(RuntimeError, match="interrupted"):  # noqa: PT012
        with CheckpointPublisher(bucket, model_dir) as publisher:
            _save(model_dir, 1, kept=[1])
            publisher.after_save(None, 1)
            _open_soon(store, later)
            raise RuntimeError("training interrupted")  # no listener end() then
    assert publisher.published == [1]
    assert _newest_in_state(store, bucket) == "model.ckpt-1"
    assert _publisher_threads() == []

    # Training that failed on its own fails with its own error, not the upload's.
    store.error = EndpointConnectionError(endpoint_url="http://bucket.invalid")
    with pytest.raises(RuntimeError, match="interrupted"):  # noqa: PT012
        with CheckpointPublisher(bucket, model_dir) as publisher:
            _save(model_dir, 2, kept=[1, 2])
            publisher.after_save(None, 2)
            raise RuntimeError("training interrupted")
    assert publisher.queue.error is store.error
    assert _publisher_threads() == []


def test_files_training_writes_for_a_moment_are_not_published(
    store: HeldStore, tmp_path: Path
) -> None:
    """The publisher sends event files while training goes on: a save in progress (its
    temporary folder) and an atomic write's temporary file are not for the bucket."""
    store.gate.set()
    bucket = BucketDir(store, "t1", "jobs/f")
    model_dir = tmp_path / "scratch"
    (model_dir / "model.ckpt-5_temp").mkdir(parents=True)
    (model_dir / "model.ckpt-5_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"d")
    (model_dir / "model.ckpt-5_temp" / "part-00000-of-00001.index").write_bytes(b"i")
    (model_dir / f"graph.pbtxt.tmp{'0' * 32}").write_text("half a graph")
    (model_dir / "events.out.tfevents.1.host").write_bytes(b"e")
    (model_dir / "eval").mkdir()
    (model_dir / "eval" / "events.out.tfevents.2.host").write_bytes(b"e")
    assert publish_files(bucket, model_dir) == 2
    assert sorted(k.split("jobs/f/", 1)[1] for k in store.puts) == [
        "eval/events.out.tfevents.2.host",
        "events.out.tfevents.1.host",
    ]


def _export(folder: Path) -> Path:
    (folder / "variables").mkdir(parents=True)
    (folder / "variables" / "variables.index").write_bytes(b"v")
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(b"w" * 10)
    (folder / "saved_model.pb").write_bytes(b"graph")
    return folder


def test_an_export_whose_upload_failed_is_removed_and_never_listed(
    store: HeldStore, tmp_path: Path
) -> None:
    store.gate.set()
    bucket = BucketDir(store, "t1", "jobs/e")
    older = publish_export(bucket, _export(tmp_path / "local" / "100"))
    assert export_in_bucket(bucket, older)

    # The bucket stops answering after the variables were uploaded.
    failing = BucketDir(_FailAfter(store, puts=2), "t1", "jobs/e")
    with pytest.raises(EndpointConnectionError):
        publish_export(failing, _export(tmp_path / "local" / "200"))
    # What the failed upload had written is gone again.
    assert not list(store.list(f"{bucket.key}/export/200/"))

    # The bucket still down when the upload is removed: its folder stays, and no reader
    # of exports takes it for one.
    failing = BucketDir(_FailAfter(store, puts=2, deletes_fail=True), "t1", "jobs/e")
    with pytest.raises(EndpointConnectionError):
        publish_export(failing, _export(tmp_path / "local" / "300"))
    partial = {info.key.rsplit("/", 1)[1] for info in store.list(f"{bucket.key}/export/300/")}
    assert partial == {"variables.index", "variables.data-00000-of-00001"}
    assert not export_in_bucket(bucket, "jobs/e/export/300")
    cache = InputCache(store, tmp_path / "cache", limit_bytes=10**6)
    try:
        newest = fetch_newest_export(bucket, cache)
        assert newest is not None
        assert newest.name == "100"
    finally:
        cache.release()
    api = Storage(tmp_path / "api", blobs=store).for_tenant("t1")
    found = api.stored_export(api.job_model_dir("e"))
    assert found is not None
    assert found[0] == "100"


class _FailAfter(LocalBlobStore):
    """``store``'s folder, whose uploads fail once ``puts`` were made (and its deletes
    too, with ``deletes_fail``), as when the bucket stops answering."""

    local = False

    def __init__(self, store: LocalBlobStore, puts: int, deletes_fail: bool = False) -> None:
        super().__init__(store.root)
        self.left = puts
        self.deletes_fail = deletes_fail

    def put_file(self, key: str, src: Path) -> None:
        if self.left <= 0:
            raise EndpointConnectionError(endpoint_url="http://bucket.invalid")
        self.left -= 1
        super().put_file(key, src)

    def delete_prefix(self, prefix: str) -> int:
        if self.deletes_fail:
            raise EndpointConnectionError(endpoint_url="http://bucket.invalid")
        return super().delete_prefix(prefix)
