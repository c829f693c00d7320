"""Spec features end to end through a real worker: custom objects, inline models,
and both checkpoint formats."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.integration.conftest import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests import models  # noqa: E402  (needs TensorFlow)

pytestmark = pytest.mark.integration


class relu6(tf.keras.layers.Layer):  # noqa: N801 - the documentation's own name
    """A user's custom layer, as in model_to_estimator's documentation."""

    def call(self, inputs):
        return tf.minimum(tf.maximum(inputs, 0.0), 6.0)


def _upload(client, path: str, name: str, content: bytes) -> str:
    response = client.post(path, files={"file": (name, content)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _run(client, spec: dict) -> dict:
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return job


def _checkpoint_keys(client, job: dict, into: Path) -> set[str]:
    step = job["progress"]["global_step"]
    response = client.get(f"/jobs/{job['id']}/checkpoints/{step}")
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        archive.extractall(into, filter="data")
    reader = tf.train.load_checkpoint(str(into / f"model.ckpt-{step}"))
    return set(reader.get_variable_to_shape_map())


@pytest.fixture(scope="module")
def seed_data(client) -> str:
    return _upload(client, "/datasets", "d.npz", models.npz_bytes(models.seed_multi_io_data()))


def test_relu6_custom_object_model_converts_and_trains(client, worker, tmp_path) -> None:
    inputs = tf.keras.Input((4,), name="x")
    hidden = relu6(name="clip")(tf.keras.layers.Dense(8, name="hidden")(inputs))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, name="y")(hidden))
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    with tf.keras.utils.custom_object_scope({"relu6": relu6}):
        model.save(tmp_path / "relu6.h5", save_format="h5")
    model_id = _upload(client, "/models", "relu6.h5", (tmp_path / "relu6.h5").read_bytes())
    arrays = {"x": tf.random.normal((64, 4), seed=1).numpy(), "y": tf.ones((64, 1)).numpy()}
    data = _upload(client, "/datasets", "r.npz", models.npz_bytes(arrays))

    names = [o["name"] for o in client.get("/custom-objects").json()]
    assert "relu6" in names
    job = _run(
        client,
        {
            "keras_model_path": model_id,
            "custom_objects": {"relu6": "relu6"},
            "train": {"dataset": data, "max_steps": 20, "batch_size": 16},
            "eval": {"dataset": data},
            "metric_names_map": {"mae": "mean_abs_error"},
        },
    )
    assert {"mean_abs_error", "loss"} <= set(job["metrics"]["eval"])
    assert job["progress"]["global_step"] == 20


def test_inline_keras_model_trains_with_saver_checkpoints(
    client, worker, seed_data, tmp_path
) -> None:
    config = json.loads(models.seed_multi_io_model().to_json())
    spec = {
        "keras_model": {
            "config": config,
            "compile": {
                "optimizer": "rmsprop",
                "loss": "categorical_crossentropy",
                "metrics": {"dense_2": "categorical_accuracy", "dense_3": "categorical_accuracy"},
            },
        },
        "checkpoint_format": "saver",
        "config": {"save_checkpoints_steps": 10},
        "train": {"dataset": seed_data, "max_steps": 30},
        "eval": {"dataset": seed_data},
    }
    job = _run(client, spec)
    assert {"dense_2_categorical_accuracy", "dense_3_categorical_accuracy"} <= set(
        job["metrics"]["eval"]
    )
    keys = _checkpoint_keys(client, job, tmp_path / "ckpt")
    # Name-based (tf.compat.v1.train.Saver): variables by graph name, no object graph.
    assert "global_step" in keys
    assert "dense_1/kernel" in keys
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" not in keys


def test_default_checkpoint_format_is_object_based(client, worker, seed_data, tmp_path) -> None:
    h5 = models.save_h5(models.seed_multi_io_model(), tmp_path / "seed.h5")
    job = _run(
        client,
        {
            "keras_model_path": _upload(client, "/models", "seed.h5", h5.read_bytes()),
            "train": {"dataset": seed_data, "max_steps": 10},
            "export": False,
        },
    )
    keys = _checkpoint_keys(client, job, tmp_path / "ckpt")
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in keys
    assert client.get(f"/jobs/{job['id']}/savedmodel").status_code == 404
