"""Keras models and datasets the tests upload: the seed document's examples.

Imports TensorFlow; only tests that need real models import this module.
"""

import io
from pathlib import Path

import numpy as np
import tensorflow as tf


def seed_multi_io_model() -> tf.keras.Model:
    """The metric_names_map example: two inputs, a shared layer, two softmax heads."""
    input_a = tf.keras.layers.Input(shape=(16,), name="input_a")
    input_b = tf.keras.layers.Input(shape=(16,), name="input_b")
    dense = tf.keras.layers.Dense(8, name="dense_1")
    merged = tf.keras.layers.concatenate([dense(input_a), dense(input_b)], name="merge")
    output_a = tf.keras.layers.Dense(3, activation="softmax", name="dense_2")(merged)
    output_b = tf.keras.layers.Dense(2, activation="softmax", name="dense_3")(merged)
    model = tf.keras.models.Model(inputs=[input_a, input_b], outputs=[output_a, output_b])
    model.compile(
        loss="categorical_crossentropy",
        optimizer="rmsprop",
        metrics={"dense_2": "categorical_accuracy", "dense_3": "categorical_accuracy"},
    )
    return model


def seed_multi_io_data(n: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 16)).astype("float32")
    b = rng.normal(size=(n, 16)).astype("float32")
    # Learnable labels: the class is a function of the inputs.
    y2 = np.eye(3, dtype="float32")[(a[:, 0] > 0).astype(int) + (b[:, 0] > 0).astype(int)]
    y3 = np.eye(2, dtype="float32")[(a[:, 1] > 0).astype(int)]
    return {"input_a": a, "input_b": b, "dense_2": y2, "dense_3": y3}


def seed_dict_io_model() -> tf.keras.Model:
    """The export_outputs example: dict inputs a, b; a regression head c and a
    classification head d."""
    inputs = {"a": tf.keras.Input((8,), name="a"), "b": tf.keras.Input((8,), name="b")}
    outputs = {
        "c": tf.keras.layers.Dense(1, name="c")(inputs["a"]),
        "d": tf.keras.layers.Dense(3, activation="softmax", name="d")(inputs["b"]),
    }
    model = tf.keras.Model(inputs, outputs)
    model.compile(
        optimizer="adam",
        loss={"c": "mse", "d": "categorical_crossentropy"},
        metrics={"c": "mae", "d": "categorical_accuracy"},
    )
    return model


def seed_dict_io_data(n: int = 200, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 8)).astype("float32")
    b = rng.normal(size=(n, 8)).astype("float32")
    return {
        "a": a,
        "b": b,
        "c": a.sum(axis=1, keepdims=True),
        "d": np.eye(3, dtype="float32")[rng.integers(0, 3, n)],
        "sample_weights.c": np.ones(n, "float32"),
        "sample_weights.d": rng.uniform(0.5, 1.5, n).astype("float32"),
    }


def save_h5(model: tf.keras.Model, path: Path) -> Path:
    model.save(path, save_format="h5")
    return path


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
