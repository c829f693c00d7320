"""Small training data is kept in memory after its first pass (K2E_DATASET_CACHE_BYTES);
larger data streams from the file every epoch. Either way the batches are the same."""

from pathlib import Path

import numpy as np
import pytest

from k2e.formats.npz import inspect_npz
from k2e.formats.read_limits import ReadLimits
from k2e.schemas import DatasetInfo, TensorInfo

tf = pytest.importorskip("tensorflow")
from worker.inputs import Batching, decoded_bytes, input_fn_for  # noqa: E402  (needs TensorFlow)

EXAMPLES = 100
INPUTS = [TensorInfo(name="x", shape=[None, 3])]
OUTPUTS = [TensorInfo(name="y", shape=[None, 1])]


def _dataset(tmp_path: Path) -> tuple[DatasetInfo, Path]:
    x = np.arange(EXAMPLES * 3, dtype="float32").reshape(EXAMPLES, 3)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=x[:, :1] * 2)
    summary = inspect_npz(path)
    info = DatasetInfo(
        id="d",
        format="npz",
        num_examples=summary.num_examples,
        arrays=summary.arrays,
        dtypes=summary.dtypes,
    )
    return info, path


def _batches(info: DatasetInfo, path: Path, cache_bytes: int, steps: int) -> tuple[list, set]:
    batching = Batching(16, training=True, cache_bytes=cache_bytes)
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        features, labels = tf.compat.v1.data.make_one_shot_iterator(
            input_fn_for(info, path, INPUTS, OUTPUTS, batching, ReadLimits())()
        ).get_next()
        batches = [session.run((features["x"], labels["y"])) for _ in range(steps)]
        ops = {op.type for op in graph.get_operations()}
    return batches, ops


def test_decoded_bytes_counts_the_arrays_a_job_reads(tmp_path: Path) -> None:
    info, _ = _dataset(tmp_path)
    assert decoded_bytes(info, ["x", "y"]) == EXAMPLES * 4 * 3 + EXAMPLES * 4
    assert decoded_bytes(info, ["x"]) == EXAMPLES * 4 * 3


def test_small_training_data_is_cached_and_gives_the_same_batches(tmp_path: Path) -> None:
    info, path = _dataset(tmp_path)
    steps = 3 * EXAMPLES // 16  # three epochs: later ones come from the cache
    cached, cached_ops = _batches(info, path, cache_bytes=1024**2, steps=steps)
    streamed, streamed_ops = _batches(info, path, cache_bytes=0, steps=steps)
    assert "CacheDatasetV2" in cached_ops or "CacheDataset" in cached_ops
    assert not {"CacheDatasetV2", "CacheDataset"} & streamed_ops
    for (cx, cy), (sx, sy) in zip(cached, streamed, strict=True):
        np.testing.assert_array_equal(cx, sx)
        np.testing.assert_array_equal(cy, sy)


def test_data_above_the_bound_is_not_cached(tmp_path: Path) -> None:
    info, path = _dataset(tmp_path)
    _, ops = _batches(info, path, cache_bytes=decoded_bytes(info, ["x", "y"]) - 1, steps=1)
    assert not {"CacheDatasetV2", "CacheDataset"} & ops


def _source(count: int, opened: list[int]):
    from worker.inputs import ChunkSource

    def chunks():
        opened.append(1)
        for i in range(3):  # three chunks of two examples: 0 1 | 2 3 | 4 5
            yield {"x": np.array([[2.0 * i], [2.0 * i + 1]], "float32")}

    specs = [tf.TensorSpec([None, 1], tf.float32)]
    return ChunkSource(chunks, count, specs, lambda chunk: [chunk["x"]])


def _rows(arrays: list[np.ndarray]) -> list[float]:
    return arrays[0].reshape(-1).tolist()


def test_chunks_are_read_in_order_from_one_opening() -> None:
    opened: list[int] = []
    source = _source(3, opened)
    assert [_rows(source.read(np.int64(i))) for i in range(3)] == [[0, 1], [2, 3], [4, 5]]
    assert len(opened) == 1
    assert _rows(source.read(0)) == [0, 1]  # a new pass reopens the file
    assert len(opened) == 2


def test_out_of_order_indices_and_wrong_counts_lose_nothing() -> None:
    opened: list[int] = []
    source = _source(3, opened)
    assert _rows(source.read(2)) == [4, 5]
    assert _rows(source.read(1)) == [2, 3]
    short = _source(2, [])  # too few chunks counted: the last index takes the rest
    assert _rows(short.read(0)) + _rows(short.read(1)) == [0, 1, 2, 3, 4, 5]
    long = _source(4, [])  # too many: the index past the end has no examples
    assert [_rows(long.read(i)) for i in range(4)] == [[0, 1], [2, 3], [4, 5], []]
    assert long.read(3)[0].shape == (0, 1)


def test_input_functions_turn_tf_data_autotuning_off(tmp_path: Path) -> None:
    # Its optimization thread made closing the session of a training or an evaluation
    # wait about 1 s in one run of two (bench/training_tail.py).
    info, path = _dataset(tmp_path)
    for batching in (Batching(16, training=True, cache_bytes=1024**2), Batching(16, False)):
        with tf.Graph().as_default():
            ds = input_fn_for(info, path, INPUTS, OUTPUTS, batching, ReadLimits())()
            assert ds.options().autotune.enabled is False
