"""Bucket storage, worker side, against a real S3 server (SeaweedFS) and real TensorFlow:
the checkpoint publisher during an Estimator's training, a restore into empty scratch,
and the worker's input cache (hits, tampering, a mismatched upload, eviction)."""

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import worker.cache
from k2e.storage import file_sha256
from tests.support.bucket_store import RecordingStore, s3_store
from tests.support.s3_server import S3Server
from worker.cache import InputCache, InputMismatch
from worker.sync import BucketDir, CheckpointPublisher, fetch_checkpoint, restore_checkpoints

tf = pytest.importorskip("tensorflow")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def store(s3: S3Server, request: pytest.FixtureRequest) -> RecordingStore:
    prefix = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:60]
    return RecordingStore(s3_store(s3, f"t/{prefix}"))


def _estimator(
    model_dir: Path, save_every: int, keep: int = 5, checkpoint_format: str = "checkpoint"
) -> tuple:
    tf.keras.backend.clear_session()
    model = tf.keras.Sequential(
        [tf.keras.layers.Dense(2, input_shape=(3,)), tf.keras.layers.Dense(1)]
    )
    model.compile("sgd", "mse")
    config = tf.estimator.RunConfig(
        model_dir=str(model_dir),
        save_checkpoints_steps=save_every,
        keep_checkpoint_max=keep,
        tf_random_seed=1,
    )
    name = model.input_names[0]

    def input_fn():
        rng = np.random.default_rng(0)
        x = rng.random((64, 3), dtype=np.float32)
        y = rng.random((64, 1), dtype=np.float32)
        return tf.data.Dataset.from_tensor_slices(({name: x}, y)).repeat().batch(8)

    estimator = tf.keras.estimator.model_to_estimator(
        keras_model=model, config=config, checkpoint_format=checkpoint_format
    )
    return estimator, input_fn


def _step(key: str) -> int:
    return int(re.search(r"model\.ckpt-([0-9]+)\.", key)[1])


def test_the_publisher_uploads_each_checkpoint_data_then_index_then_state(
    store: RecordingStore, tmp_path: Path
) -> None:
    bucket = BucketDir(store, "t1", "jobs/a")
    model_dir = tmp_path / "scratch"
    estimator, input_fn = _estimator(model_dir, save_every=5)
    publisher = CheckpointPublisher(bucket, model_dir)
    estimator.train(input_fn, max_steps=17, saving_listeners=[publisher])
    assert publisher.published == [0, 5, 10, 15, 17]

    # Each time the state file is written, the checkpoint it names is whole in the bucket:
    # every data shard and the index were uploaded before it, the index after the data.
    puts = store.keys("put")
    state_key = bucket.object("checkpoint")
    states = [i for i, key in enumerate(puts) if key == state_key]
    assert len(states) == len(publisher.published)
    for position, step in zip(states, publisher.published, strict=True):
        before = [key for key in puts[:position] if f"model.ckpt-{step}." in key]
        index = [i for i, key in enumerate(before) if key.endswith(".index")]
        data = [i for i, key in enumerate(before) if ".data-" in key]
        assert index, (step, before)
        assert data, (step, before)
        assert max(data) < index[0], before
    # The bucket's state file names the newest checkpoint by file name, and it loads.
    state = store.get_bytes(state_key).decode()
    assert 'model_checkpoint_path: "model.ckpt-17"' in state
    assert str(tmp_path) not in state
    fetched = fetch_checkpoint(store, bucket.object("model.ckpt-17"), tmp_path / "copy")
    assert fetched is not None
    copy = tf.train.load_checkpoint(str(fetched))
    original = tf.train.load_checkpoint(str(model_dir / "model.ckpt-17"))
    names = original.get_variable_to_shape_map()
    assert names
    assert copy.get_variable_to_shape_map() == names
    for name in names:
        np.testing.assert_array_equal(copy.get_tensor(name), original.get_tensor(name))
    # The Saver kept five checkpoints (keep_checkpoint_max): the bucket keeps the same ones.
    steps = {_step(info.key) for info in store.list(f"{bucket.key}/model.ckpt-")}
    local = {_step(p.name) for p in model_dir.glob("model.ckpt-*.index")}
    assert steps == local == {0, 5, 10, 15, 17}
    # Event files and the graph are published too.
    names = {info.key.rsplit("/", 1)[-1] for info in store.list(f"{bucket.key}/")}
    assert "graph.pbtxt" in names
    assert any(name.startswith("events.out.tfevents") for name in names)


def test_old_checkpoints_the_saver_removes_leave_the_bucket(
    store: RecordingStore, tmp_path: Path
) -> None:
    bucket = BucketDir(store, "t1", "jobs/b")
    model_dir = tmp_path / "scratch"
    # (keep_checkpoint_max applies to name-based checkpoints: the Saver deletes old ones)
    estimator, input_fn = _estimator(model_dir, save_every=4, keep=2, checkpoint_format="saver")
    estimator.train(
        input_fn, max_steps=12, saving_listeners=[CheckpointPublisher(bucket, model_dir)]
    )
    steps = {_step(info.key) for info in store.list(f"{bucket.key}/model.ckpt-")}
    local = {_step(p.name) for p in model_dir.glob("model.ckpt-*.index")}
    assert steps == local
    assert len(steps) == 2
    assert 12 in steps


def test_an_attempt_that_lost_its_lease_publishes_nothing_more(
    store: RecordingStore, tmp_path: Path
) -> None:
    bucket = BucketDir(store, "t1", "jobs/e")
    model_dir = tmp_path / "scratch"
    estimator, input_fn = _estimator(model_dir, save_every=5)
    publisher = CheckpointPublisher(bucket, model_dir, owned=lambda: not publisher.published)
    estimator.train(input_fn, max_steps=12, saving_listeners=[publisher])
    assert publisher.published == [0]
    assert (
        'model_checkpoint_path: "model.ckpt-0"'
        in store.get_bytes(bucket.object("checkpoint")).decode()
    )
    steps = {_step(info.key) for info in store.list(f"{bucket.key}/model.ckpt-")}
    assert steps == {0}


def test_a_restored_model_dir_trains_on_to_exactly_max_steps(
    store: RecordingStore, tmp_path: Path
) -> None:
    bucket = BucketDir(store, "t1", "jobs/c")
    first = tmp_path / "first"
    estimator, input_fn = _estimator(first, save_every=5)
    estimator.train(input_fn, max_steps=10, saving_listeners=[CheckpointPublisher(bucket, first)])

    # Another machine: empty scratch, only the bucket.
    second = tmp_path / "second"
    assert restore_checkpoints(bucket, second) == "model.ckpt-10"
    assert tf.train.latest_checkpoint(str(second)).endswith("model.ckpt-10")
    estimator, input_fn = _estimator(second, save_every=5)
    publisher = CheckpointPublisher(bucket, second)
    estimator.train(input_fn, max_steps=23, saving_listeners=[publisher])
    assert publisher.published[0] == 10  # resumed, not started again from step 0
    assert publisher.published[-1] == 23
    assert tf.train.latest_checkpoint(str(second)).endswith("model.ckpt-23")
    # Nothing in the bucket: nothing restored, an empty scratch.
    empty = BucketDir(store, "t1", "jobs/none")
    assert restore_checkpoints(empty, tmp_path / "third") is None
    assert list((tmp_path / "third").iterdir()) == []


def test_a_checkpoint_missing_a_data_shard_is_not_restored(
    store: RecordingStore, tmp_path: Path
) -> None:
    bucket = BucketDir(store, "t1", "jobs/d")
    first = tmp_path / "first"
    estimator, input_fn = _estimator(first, save_every=5)
    estimator.train(input_fn, max_steps=10, saving_listeners=[CheckpointPublisher(bucket, first)])
    shards = [info.key for info in store.list(bucket.object("model.ckpt-10.data-"))]
    store.delete(shards[0])
    assert restore_checkpoints(bucket, tmp_path / "second") == "model.ckpt-5"


def _upload(store: RecordingStore, key: str, data: bytes) -> str:
    store.put_bytes(key, data)
    return __import__("hashlib").sha256(data).hexdigest()


def test_the_cache_fetches_once_and_checks_the_recorded_sha256(
    store: RecordingStore, tmp_path: Path
) -> None:
    key = "tenants/t/datasets/abc/data.npz"
    digest = _upload(store, key, b"x" * 1000)
    cache = InputCache(store, tmp_path / "cache", limit_bytes=10_000)
    path = cache.fetch(key, digest)
    assert path.read_bytes() == b"x" * 1000
    assert file_sha256(path) == digest
    assert store.keys("get") == [key]
    again = cache.fetch(key, digest)
    assert again == path
    assert store.keys("get") == [key]

    # A cached file changed on disk is fetched again, and is right again.
    path.write_bytes(b"y" * 1000)
    assert cache.fetch(key, digest).read_bytes() == b"x" * 1000
    assert store.keys("get") == [key, key]

    # An object whose bytes are not the upload's record is refused, and not kept.
    other = "tenants/t/datasets/def/data.npz"
    _upload(store, other, b"tampered")
    with pytest.raises(InputMismatch, match="does not match its upload"):
        cache.fetch(other, digest)
    assert not cache.path(other).exists()


def test_a_cache_hit_on_an_unchanged_file_does_not_read_it_again(
    store: RecordingStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[Path] = []

    def counting_sha256(path: Path) -> str:
        hashed.append(path)
        return file_sha256(path)

    monkeypatch.setattr(worker.cache, "file_sha256", counting_sha256)
    key = "tenants/t/datasets/hit/data.npz"
    digest = _upload(store, key, b"x" * 1000)
    cache = InputCache(store, tmp_path / "cache", limit_bytes=10_000)
    path = cache.fetch(key, digest)
    assert len(hashed) == 1  # the download, checked once
    cache.fetch(key, digest)
    cache.fetch(key, digest)
    assert len(hashed) == 1

    # Its stat changed (same bytes): hashed again, not fetched again, then trusted again.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert cache.fetch(key, digest) == path
    assert hashed == [hashed[0], path]
    cache.fetch(key, digest)
    assert len(hashed) == 2
    assert store.keys("get") == [key]

    # Bytes rewritten in place with the mtime put back: the ctime tells, it is fetched again.
    stat = path.stat()
    path.write_bytes(b"y" * 1000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.fetch(key, digest).read_bytes() == b"x" * 1000
    assert store.keys("get") == [key, key]


def test_the_cache_evicts_the_least_recently_used_past_its_bound(
    store: RecordingStore, tmp_path: Path
) -> None:
    keys = [f"tenants/t/datasets/{n}/data.npz" for n in "abcd"]
    digests = [_upload(store, key, bytes([n]) * 400) for n, key in enumerate(keys)]
    cache = InputCache(store, tmp_path / "cache", limit_bytes=1000)
    cache.fetch(keys[0], digests[0])
    cache.fetch(keys[1], digests[1])
    cache.release()
    cache.fetch(keys[0], digests[0])  # a is now used more recently than b
    cache.release()
    cache.fetch(keys[2], digests[2])  # 1200 bytes: b goes
    assert cache.path(keys[0]).exists()
    assert cache.path(keys[2]).exists()
    assert not cache.path(keys[1]).exists()
    assert cache.usage() <= 1000
    cache.release()

    # A file a job holds is never evicted, even past the bound.
    held = cache.fetch(keys[3], digests[3])
    other = InputCache(store, tmp_path / "cache", limit_bytes=0)
    other.fetch(keys[1], digests[1])  # another worker process of the machine
    assert held.exists()
    assert cache.path(keys[2]).exists() is False
    cache.release()
    other.release()
    other.fetch(keys[1], digests[1])
    assert not held.exists()
