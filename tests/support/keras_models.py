"""Keras models and datasets the tests upload: the seed document's examples (from the
``examples`` package) and helpers to turn them into upload bytes.

Imports TensorFlow; only tests that need real models import this module.
"""

import io
from pathlib import Path

import numpy as np
import tensorflow as tf

from k2e.examples.seed_data import seed_dict_io_data, seed_multi_io_data
from k2e.examples.seed_models import seed_dict_io_model, seed_multi_io_model

__all__ = [
    "npz_bytes",
    "save_h5",
    "seed_dict_io_data",
    "seed_dict_io_model",
    "seed_multi_io_data",
    "seed_multi_io_model",
]


def save_h5(model: tf.keras.Model, path: Path) -> Path:
    model.save(path, save_format="h5")
    return path


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
