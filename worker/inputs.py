"""input_fns that feed the Estimator from uploaded datasets (npz, CSV, TFRecord)."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from k2e.formats.csvdata import load_csv_arrays
from k2e.formats.limits import ReadLimits
from k2e.formats.npz import load_npz_arrays
from k2e.formats.tfrecord import is_gzip
from k2e.schemas import DatasetInfo, TensorInfo
from k2e.settings import get_settings
from worker.tfrt import tf

SAMPLE_WEIGHTS = "sample_weights"


@dataclass(frozen=True)
class Batching:
    batch_size: int
    training: bool
    shuffle: bool = False
    shuffle_buffer: int = 10_000
    shuffle_seed: int | None = None
    drop_remainder: bool = False


def input_fn_for(
    info: DatasetInfo,
    path: Path,
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    batching: Batching,
) -> Callable[[], Any]:
    """Features keyed by input name, labels by output name; with weights present, the
    ``{"features", "sample_weights"}`` form the Keras Estimator expects. Training data
    repeats (``max_steps`` decides when to stop); evaluation data is one pass."""
    if info.format == "tfrecord":
        return _tfrecord_input_fn(info, path, inputs, outputs, batching)
    # The same bounds the API's inspection kept (inflation, array sizes, CSV columns and
    # fields), checked again before anything is loaded: the file may have changed since.
    limits = ReadLimits.from_settings(get_settings())
    load = load_npz_arrays if info.format == "npz" else load_csv_arrays
    arrays = load(path, limits)
    return _arrays_input_fn(arrays, inputs, outputs, batching)


def weight_names(names: list[str], outputs: list[str]) -> dict[str, str]:
    """Output name -> the dataset's weight feature for it."""
    found = {}
    if SAMPLE_WEIGHTS in names and len(outputs) == 1:
        found[outputs[0]] = SAMPLE_WEIGHTS
    for output in outputs:
        if f"{SAMPLE_WEIGHTS}.{output}" in names:
            found[output] = f"{SAMPLE_WEIGHTS}.{output}"
    return found


def _finish(ds: Any, batching: Batching) -> Any:
    if batching.training:
        if batching.shuffle:
            ds = ds.shuffle(
                batching.shuffle_buffer, seed=batching.shuffle_seed, reshuffle_each_iteration=True
            )
        ds = ds.repeat()
    return ds.batch(batching.batch_size, drop_remainder=batching.drop_remainder)


def _arrays_input_fn(
    arrays: dict[str, np.ndarray],
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    batching: Batching,
) -> Callable[[], Any]:
    features = {t.name: _as_model_array(arrays[t.name], t) for t in inputs}
    labels = {t.name: _as_model_array(arrays[t.name], t) for t in outputs}
    names = weight_names(list(arrays), [t.name for t in outputs])
    weights = {out: arrays[key].astype("float32").reshape(-1) for out, key in names.items()}
    if weights:
        # The Keras Estimator wants a weight for every output once any is given.
        n = len(next(iter(weights.values())))
        for t in outputs:
            weights.setdefault(t.name, np.ones(n, "float32"))

    def input_fn() -> Any:
        x: Any = {"features": features, "sample_weights": weights} if weights else features
        ds = tf.data.Dataset.from_tensor_slices((x, labels))
        return _finish(ds, batching).prefetch(tf.data.AUTOTUNE)

    return input_fn


def _as_model_array(array: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    # A [batch, 1] tensor also takes a flat [n] array.
    if array.ndim == 1 and len(tensor.shape) == 2 and tensor.shape[1] == 1:
        array = array.reshape(-1, 1)
    return array.astype(tensor.dtype or "float32", copy=False)


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
            info.arrays[name][1:], tf.int64 if info.dtypes.get(name) == "int64" else tf.float32
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
        return ds.prefetch(tf.data.AUTOTUNE)

    return input_fn
