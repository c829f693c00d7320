"""Keras models and datasets the tests upload: the seed document's examples (from the
``examples`` package), models holding what an upload may hold beyond the built-in layers
(feature columns, a custom activation function, the documentation's custom layer), and
helpers to turn them into upload bytes.

Imports TensorFlow; only tests that need real models import this module.
"""

import io
from pathlib import Path

import numpy as np
import tensorflow as tf

from k2e.examples.seed_data import seed_dict_io_data, seed_multi_io_data
from k2e.examples.seed_models import seed_dict_io_model, seed_multi_io_model

__all__ = [
    "FEATURES",
    "activation_model",
    "custom_relu",
    "identity_columns_model",
    "npz_bytes",
    "relu6",
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


# Models with what a user's upload may hold beyond the built-in layers: feature columns
# over identity columns, a custom activation function, a custom layer.
FEATURES = {
    "sex": np.int64([1, 1, 1, 1, 0]),
    "cp": np.int64([0, 3, 3, 2, 1]),
    "slope": np.int64([3, 2, 0, 3, 1]),
}


def identity_columns_model() -> tf.keras.Model:
    """The library's test_train_with_dense_features: int64 Inputs of shape (n,) (n the
    feature's distinct values: 2 or 4) feed indicator columns of identity columns."""
    columns, inputs = [], {}
    for name, values in FEATURES.items():
        buckets = np.size(np.unique(values))
        columns.append(
            tf.feature_column.indicator_column(
                tf.feature_column.categorical_column_with_identity(name, buckets)
            )
        )
        inputs[name] = tf.keras.Input(shape=(buckets,), dtype="int64", name=name)
    x = tf.keras.layers.Dense(16, activation="relu")(
        tf.compat.v1.keras.layers.DenseFeatures(columns)(inputs)
    )
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, activation="linear", name="y")(x))
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def custom_relu(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.relu(x)


def activation_model() -> tf.keras.Model:
    """A model whose hidden layer uses the plain function ``custom_relu`` as activation."""
    inputs = tf.keras.Input((4,), name="x")
    hidden = tf.keras.layers.Dense(8, activation=custom_relu, name="hidden")(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, name="y")(hidden))
    model.compile(optimizer="sgd", loss="mse")
    return model


class relu6(tf.keras.layers.Layer):  # noqa: N801 - the documentation's own name
    """A user's custom layer, as in model_to_estimator's documentation."""

    def call(self, inputs):
        return tf.minimum(tf.maximum(inputs, 0.0), 6.0)
