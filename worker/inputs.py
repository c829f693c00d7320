"""input_fns that feed the Estimator from uploaded datasets."""

from collections.abc import Callable
from typing import Any

import numpy as np

from k2e.npz import load_npz_arrays
from k2e.schemas import TensorInfo
from worker.tfrt import tf

SAMPLE_WEIGHTS = "sample_weights"


def npz_input_fn(
    path: str,
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    batch_size: int,
    *,
    training: bool,
    shuffle: bool = False,
    shuffle_buffer: int = 10_000,
    shuffle_seed: int | None = None,
    drop_remainder: bool = False,
) -> Callable[[], Any]:
    """Features keyed by input name, labels by output name; with weights present, the
    ``{"features", "sample_weights"}`` form the Keras Estimator expects."""
    arrays = load_npz_arrays(path)
    features = {t.name: _as_model_array(arrays[t.name], t) for t in inputs}
    labels = {t.name: _as_model_array(arrays[t.name], t) for t in outputs}
    weights = _sample_weights(arrays, [t.name for t in outputs])

    def input_fn() -> Any:
        x: Any = {"features": features, "sample_weights": weights} if weights else features
        ds = tf.data.Dataset.from_tensor_slices((x, labels))
        if training:
            if shuffle:
                ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
            ds = ds.repeat()
        return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)

    return input_fn


def _as_model_array(array: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    # A [batch, 1] tensor also takes a flat [n] array.
    if array.ndim == 1 and len(tensor.shape) == 2 and tensor.shape[1] == 1:
        array = array.reshape(-1, 1)
    return array.astype(tensor.dtype or "float32", copy=False)


def _sample_weights(arrays: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    weights = {}
    if SAMPLE_WEIGHTS in arrays and len(outputs) == 1:
        weights[outputs[0]] = arrays[SAMPLE_WEIGHTS].astype("float32")
    for name in outputs:
        key = f"{SAMPLE_WEIGHTS}.{name}"
        if key in arrays:
            weights[name] = arrays[key].astype("float32")
    if weights:
        # The Keras Estimator wants a weight for every output once any is given.
        for name in outputs:
            weights.setdefault(name, np.ones(len(next(iter(weights.values()))), "float32"))
    return weights
