"""What a job produced, read back through the API: its exported SavedModel, a checkpoint's
weights in a Keras model, and the comparisons of their answers.

Imports TensorFlow."""

import io
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

# float32 end to end; the SavedModel and Keras run the same ops on the same weights.
RTOL, ATOL = 1e-5, 1e-6


def extract_savedmodel(client, job_id: str, into: Path) -> Path:
    response = client.get(f"/jobs/{job_id}/savedmodel")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        names = archive.getnames()
        version = names[0].split("/")[0]
        assert version.isdigit()
        assert f"{version}/saved_model.pb" in names
        assert any(n.startswith(f"{version}/variables/variables.") for n in names)
        archive.extractall(into, filter="data")
    return into / version


def keras_from_checkpoint(client, job_id: str, step: int, model: Any, into: Path) -> Any:
    """``model`` (the same architecture, built in this process) with the weights of the
    job's checkpoint ``step``, downloaded through the API.

    The Estimator writes an object-based checkpoint of the Keras model: its variables are
    ``layer_with_weights-<i>/<kernel|bias>``, ``i`` counting the model's layers that have
    weights, in order. Every such variable must be used, and every shape must match.
    """
    response = client.get(f"/jobs/{job_id}/checkpoints/{step}")
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        archive.extractall(into, filter="data")
    reader = tf.train.load_checkpoint(str(into / f"model.ckpt-{step}"))
    in_checkpoint = {
        name
        for name in reader.get_variable_to_shape_map()
        if name.startswith("layer_with_weights-") and "OPTIMIZER_SLOT" not in name
    }
    used = set()
    for index, layer in enumerate(layer for layer in model.layers if layer.weights):
        values = []
        for variable in layer.weights:
            attribute = variable.name.split("/")[-1].split(":")[0]  # "kernel", "bias"
            key = f"layer_with_weights-{index}/{attribute}/.ATTRIBUTES/VARIABLE_VALUE"
            value = reader.get_tensor(key)
            assert value.shape == tuple(variable.shape), (layer.name, key, value.shape)
            values.append(value)
            used.add(key)
        layer.set_weights(values)
    assert used == in_checkpoint, sorted(in_checkpoint ^ used)
    return model


def assert_close(actual: Any, expected: np.ndarray, what: str) -> None:
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=what)


def assert_differs(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """The comparisons above can fail: a swap of the inputs changes the answer."""
    assert not np.allclose(a, b, rtol=100 * RTOL, atol=100 * ATOL), what
