"""The seed document's example models, compiled as the documentation compiles them.

Imports TensorFlow: only code that builds a model imports this module.
"""

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
