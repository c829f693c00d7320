"""input_fns that feed the Estimator from uploaded datasets (npz, CSV, TFRecord)."""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from k2e.formats.csvdata import inspect_csv, iter_csv_chunks
from k2e.formats.npz import chunk_rows as npz_chunk_rows
from k2e.formats.npz import inspect_npz, iter_npz_chunks
from k2e.formats.read_limits import ReadLimits
from k2e.formats.tfrecord import is_gzip
from k2e.schemas import DatasetInfo, TensorInfo
from worker.tfrt import tf

SAMPLE_WEIGHTS = "sample_weights"
CSV_CHUNK_ROWS = 1024
# A tf.Example feature's list kind (k2e.formats.examples) -> the dtype it parses to.
_EXAMPLE_KINDS: dict[str | None, Any] = {"int64": tf.int64, "bytes": tf.string}


@dataclass(frozen=True)
class Batching:
    batch_size: int
    training: bool
    shuffle: bool = False
    shuffle_buffer: int = 10_000
    shuffle_seed: int | None = None
    drop_remainder: bool = False
    cache_bytes: int = 0  # training data up to this size is kept in memory after one pass


def input_fn_for(
    info: DatasetInfo,
    path: Path,
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    batching: Batching,
    limits: ReadLimits,
) -> Callable[[], Any]:
    """Features keyed by input name, labels by output name; with weights present, the
    ``{"features", "sample_weights"}`` form the Keras Estimator expects. Training data
    repeats (``max_steps`` decides when to stop); evaluation data is one pass. An npz or
    CSV file is checked against ``limits`` (the worker's settings) before it is read.

    Every format streams from its file: nothing dataset-sized enters the graph (where
    ``from_tensor_slices`` would embed arrays as constants, past protobuf's 2 GB limit)
    nor stays in the worker's memory."""
    if info.format == "tfrecord":
        return _tfrecord_input_fn(info, path, inputs, outputs, batching)
    chunks, count = _chunks(info, path, read_names(info, inputs, outputs), limits)
    return _chunked_input_fn(info, chunks, inputs, outputs, batching, count)


def first_features(
    info: DatasetInfo, path: Path, inputs: list[TensorInfo], n: int, limits: ReadLimits
) -> dict[str, np.ndarray] | None:
    """The model inputs of the dataset's first ``n`` examples as the input_fns feed them
    (text as bytes objects, as a session returns it), read without TensorFlow; None for
    a TFRecord file, which only TensorFlow parses."""
    if info.format == "tfrecord":
        return None
    chunks, _ = _chunks(info, path, [t.name for t in inputs], limits)
    parts: dict[str, list[np.ndarray]] = {t.name: [] for t in inputs}
    have = 0
    iterator = chunks()
    for chunk in iterator:
        for t in inputs:
            parts[t.name].append(model_array(chunk[t.name], t)[: n - have])
        have += len(parts[inputs[0].name][-1])
        if have >= n:
            break
    if hasattr(iterator, "close"):
        iterator.close()  # the npz reader closes its members
    features = {name: np.concatenate(arrays) for name, arrays in parts.items()}
    return {k: v.astype(object) if v.dtype.kind == "S" else v for k, v in features.items()}


def _chunks(
    info: DatasetInfo, path: Path, names: list[str], limits: ReadLimits
) -> tuple[Callable[[], Iterator[dict[str, np.ndarray]]], int]:
    """How to read ``names`` of an npz or CSV file a chunk at a time (each call starts at
    the file's beginning), and about how many chunks there are."""
    # The same bounds the API's inspection kept (inflation, array sizes, CSV columns and
    # fields), checked again before anything is read: the file may have changed since.
    if info.format == "npz":
        npz = inspect_npz(path, limits)
        example_bytes = sum(
            math.prod(npz.arrays[name][1:]) * np.dtype(npz.dtypes[name]).itemsize for name in names
        )
        count = -(-npz.num_examples // npz_chunk_rows(example_bytes))
        return lambda: iter_npz_chunks(path, names), count
    summary = inspect_csv(path, limits)
    count = -(-summary.num_examples // CSV_CHUNK_ROWS)
    return lambda: iter_csv_chunks(path, summary, limits, rows=CSV_CHUNK_ROWS), count


def read_names(info: DatasetInfo, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> list[str]:
    """The dataset's arrays a job reads: its inputs, outputs and their sample weights."""
    weights = weight_names(list(info.arrays), [t.name for t in outputs])
    return [t.name for t in [*inputs, *outputs]] + list(dict.fromkeys(weights.values()))


def weight_names(names: list[str], outputs: list[str]) -> dict[str, str]:
    """Output name -> the dataset's weight feature for it."""
    found = {}
    if SAMPLE_WEIGHTS in names and len(outputs) == 1:
        found[outputs[0]] = SAMPLE_WEIGHTS
    for output in outputs:
        if f"{SAMPLE_WEIGHTS}.{output}" in names:
            found[output] = f"{SAMPLE_WEIGHTS}.{output}"
    return found


def decoded_bytes(info: DatasetInfo, names: list[str]) -> int:
    """About the bytes ``names``' arrays take once read (shapes and dtypes as inspected);
    text counts numpy's fixed width, or 64 bytes a value for CSV's variable-length text."""
    total = 0
    for name in names:
        elements = int(np.prod(info.arrays.get(name, []), dtype=np.int64))
        total += elements * _item_bytes(info.dtypes.get(name, "float64"))
    return total


def _item_bytes(dtype_name: str) -> int:
    try:
        dtype = np.dtype(dtype_name)
    except TypeError:  # "string": CSV text
        return 64
    return dtype.itemsize or (64 if dtype.kind in "US" else 8)


def _finish(ds: Any, batching: Batching) -> Any:
    if batching.training:
        if batching.shuffle:
            ds = ds.shuffle(
                batching.shuffle_buffer, seed=batching.shuffle_seed, reshuffle_each_iteration=True
            )
        ds = ds.repeat()
    return ds.batch(batching.batch_size, drop_remainder=batching.drop_remainder)


def without_autotune(ds: Any) -> Any:
    """``ds`` without tf.data's autotuning model. Its optimization thread made closing a
    session that had read the dataset wait about 1 s in one run of two (the end of
    training and of evaluation; bench/training_tail.py measures it). The pipeline stays
    adaptive without it: prefetch(AUTOTUNE) grows its own buffer as it empties, and a
    map's AUTOTUNE parallelism is the machine's cores."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def _chunked_input_fn(
    info: DatasetInfo,
    read_chunks: Callable[[], Iterator[dict[str, np.ndarray]]],
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    batching: Batching,
    chunks: int,
) -> Callable[[], Any]:
    """The file's ``chunks`` chunks (a run of examples each), read in order by a
    ``numpy_function`` map over their indices, then unbatched into the examples that
    shuffle, repeat and batch as ``from_tensor_slices`` would give them.

    A map over ``range(chunks)`` rather than ``from_generator``: the same reads, but one
    traced function instead of three and a ``flat_map``, which made each input_fn about
    0.06 s slower to build and start (measured on the seed data: graph 0.05 s -> 0.03 s,
    one pass of 32 batches 0.09 s -> 0.05 s)."""
    output_names = [t.name for t in outputs]
    weights = weight_names(list(info.arrays), output_names)
    names = read_names(info, inputs, outputs)

    def structure(chunk: dict[str, np.ndarray]) -> Any:
        features = {t.name: model_array(chunk[t.name], t) for t in inputs}
        labels = {t.name: model_array(chunk[t.name], t) for t in outputs}
        if not weights:
            return features, labels
        n = len(next(iter(features.values())))
        # The Keras Estimator wants a weight for every output once any is given.
        sample_weights = {
            out: chunk[weights[out]].astype("float32").reshape(-1)
            if out in weights
            else np.ones(n, "float32")
            for out in output_names
        }
        return {"features": features, "sample_weights": sample_weights}, labels

    def spec(tensor: TensorInfo) -> Any:
        shape = model_example_shape(info.arrays[tensor.name][1:], tensor)
        return tf.TensorSpec([None, *shape], tf.as_dtype(model_dtype(tensor)))

    features_spec = {t.name: spec(t) for t in inputs}
    labels_spec = {t.name: spec(t) for t in outputs}
    signature: Any = (features_spec, labels_spec)
    if weights:
        weights_spec = {out: tf.TensorSpec([None], tf.float32) for out in output_names}
        signature = ({"features": features_spec, "sample_weights": weights_spec}, labels_spec)
    flat_specs = tf.nest.flatten(signature)

    # Small training data is kept in memory after its first pass: a repeat would otherwise
    # read the file (under the GIL) once per epoch. The cache holds the chunks, not single
    # examples, so its overhead stays small.
    cache = batching.training and decoded_bytes(info, names) <= batching.cache_bytes

    def input_fn() -> Any:
        source = ChunkSource(read_chunks, chunks, flat_specs, structure)

        def read(index: Any) -> Any:
            arrays = tf.numpy_function(source.read, [index], [s.dtype for s in flat_specs])
            for array, s in zip(arrays, flat_specs, strict=True):
                array.set_shape(s.shape)
            return tf.nest.pack_sequence_as(signature, arrays)

        ds = tf.data.Dataset.range(chunks).map(read)
        if cache:
            ds = ds.cache()
        return without_autotune(_finish(ds.unbatch(), batching).prefetch(tf.data.AUTOTUNE))

    return input_fn


class ChunkSource:
    """Chunk ``index`` of a file that can only be read in order, for a sequential map
    over ``range(chunks)``: tf.data calls it with 0, 1, 2, ... from one thread, and a new
    pass (a repeat, a new iterator) starts again at 0, which reopens the file. Any other
    order reopens and skips, so every index gets its own chunk whatever the caller does.
    The last index also takes whatever follows it (none when the count was right), and an
    index past the end gets no examples: no example is lost or read twice in a pass."""

    def __init__(
        self,
        open_chunks: Callable[[], Iterator[dict[str, np.ndarray]]],
        chunks: int,
        flat_specs: list[Any],
        structure: Callable[[dict[str, np.ndarray]], Any],
    ) -> None:
        self._open, self._chunks = open_chunks, chunks
        self._specs, self._structure = flat_specs, structure
        self._iterator: Iterator[dict[str, np.ndarray]] | None = None
        self._next = 0

    def read(self, index: Any) -> list[np.ndarray]:
        i = int(index)
        if self._iterator is None or i != self._next:
            self._iterator = self._open()
            for _ in range(i):
                next(self._iterator, None)
        self._next = i + 1
        taken = [c for c in [next(self._iterator, None)] if c is not None]
        if i == self._chunks - 1:
            taken.extend(self._iterator)
            self._iterator = None
        if not taken:
            return [np.zeros([0, *s.shape[1:]], _numpy_dtype(s)) for s in self._specs]
        parts = [tf.nest.flatten(self._structure(chunk)) for chunk in taken]
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(columns) for columns in zip(*parts, strict=True)]


def _numpy_dtype(spec: Any) -> Any:
    return object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype


def example_dtype(tensor: TensorInfo) -> Any:
    """The dtype a tf.Example feature for ``tensor`` parses to (tf.Example lists hold
    bytes, int64 or float32 values): cast to the tensor's own dtype after parsing."""
    kind = tf.as_dtype(model_dtype(tensor))
    if kind == tf.string:
        return tf.string
    return tf.int64 if kind.is_integer or kind == tf.bool else tf.float32


def model_dtype(tensor: TensorInfo) -> str:
    """The dtype a model input (or output) takes; Keras's ``string`` is numpy's bytes."""
    return tensor.dtype or "float32"


def model_example_shape(have: list[int], tensor: TensorInfo) -> list[int]:
    # A [batch, 1] tensor also takes a flat [n] array.
    if not have and len(tensor.shape) == 2 and tensor.shape[1] == 1:
        return [1]
    return list(have)


def model_array(array: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """``array`` (a chunk of examples) as the tensor takes it: text is UTF-8 bytes for a
    string input and parsed for a numeric one (a CSV column); numbers are cast."""
    if array.ndim == 1 and len(tensor.shape) == 2 and tensor.shape[1] == 1:
        array = array.reshape(-1, 1)
    dtype = model_dtype(tensor)
    if dtype == "string":
        if array.dtype.kind == "U":
            return np.char.encode(array, "utf-8")
        if array.dtype.kind == "S":
            return array
        return array.astype(str).astype(bytes)  # a numeric CSV column read as text
    if array.dtype.kind == "U":  # CSV text of a numeric column
        array = array.astype(np.float64)
    return array.astype(dtype, copy=False)


def _tfrecord_input_fn(
    info: DatasetInfo,
    path: Path,
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    batching: Batching,
) -> Callable[[], Any]:
    """Streams the file with tf.data: nothing is held whole, so files larger than the
    worker's memory train."""
    output_names = [t.name for t in outputs]
    weights = weight_names(list(info.arrays), output_names)
    tensors = {t.name: t for t in [*inputs, *outputs]}
    spec = {
        name: tf.io.FixedLenFeature(
            info.arrays[name][1:], _EXAMPLE_KINDS.get(info.dtypes.get(name), tf.float32)
        )
        for name in [*tensors, *weights.values()]
    }
    compression = "GZIP" if is_gzip(path) else ""

    def split(parsed: dict[str, Any]) -> Any:
        def model_tensor(name: str) -> Any:
            t = tensors[name]
            value = tf.cast(parsed[name], t.dtype or "float32")
            want = [-1 if d is None else d for d in t.shape[1:]]
            return tf.reshape(value, [-1, *want]) if None not in t.shape[1:] else value

        features = {t.name: model_tensor(t.name) for t in inputs}
        labels = {name: model_tensor(name) for name in output_names}
        if not weights:
            return features, labels
        batch = tf.shape(next(iter(features.values())))[0]
        sample_weights = {
            out: tf.reshape(parsed[weights[out]], [-1])
            if out in weights
            else tf.ones([batch], tf.float32)
            for out in output_names
        }
        return {"features": features, "sample_weights": sample_weights}, labels

    def input_fn() -> Any:
        files = tf.data.Dataset.from_tensor_slices([str(path)])
        ds = files.interleave(
            lambda p: tf.data.TFRecordDataset(p, compression_type=compression),
            cycle_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        ds = _finish(ds, batching)
        ds = ds.map(
            lambda serialized: split(tf.io.parse_example(serialized, spec)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return without_autotune(ds.prefetch(tf.data.AUTOTUNE))

    return input_fn
