"""Spec features end to end through a real worker: custom objects, inline models,
and both checkpoint formats."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)
from tests.support.keras_models import relu6  # noqa: E402

pytestmark = pytest.mark.integration


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
    return _upload(
        client, "/datasets", "d.npz", keras_models.npz_bytes(keras_models.seed_multi_io_data())
    )


def test_relu6_custom_object_model_converts_and_trains(client, worker, tmp_path) -> None:
    inputs = tf.keras.Input((4,), name="x")
    hidden = relu6(name="clip")(tf.keras.layers.Dense(8, name="hidden")(inputs))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, name="y")(hidden))
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    with tf.keras.utils.custom_object_scope({"relu6": relu6}):
        model.save(tmp_path / "relu6.h5", save_format="h5")
    model_id = _upload(client, "/models", "relu6.h5", (tmp_path / "relu6.h5").read_bytes())
    arrays = {"x": tf.random.normal((64, 4), seed=1).numpy(), "y": tf.ones((64, 1)).numpy()}
    data = _upload(client, "/datasets", "r.npz", keras_models.npz_bytes(arrays))

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
    config = json.loads(keras_models.seed_multi_io_model().to_json())
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
    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "seed.h5")
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


class Clip6(tf.keras.layers.Layer):
    """The documentation's relu6 under another class name: custom_objects maps it."""

    def call(self, inputs):
        return tf.minimum(tf.maximum(inputs, 0.0), 6.0)


def test_a_custom_class_under_another_name_is_mapped_alike_on_every_path(
    client, worker, tmp_path
) -> None:
    inputs = tf.keras.Input((4,), name="x")
    hidden = Clip6(name="clip")(tf.keras.layers.Dense(8, name="hidden")(inputs))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, name="y")(hidden))
    model.compile(optimizer="sgd", loss="mse")
    with tf.keras.utils.custom_object_scope({"Clip6": Clip6}):
        model.save(tmp_path / "clip.h5", save_format="h5")
    content = (tmp_path / "clip.h5").read_bytes()
    arrays = {"x": tf.random.normal((64, 4), seed=2).numpy(), "y": tf.ones((64, 1)).numpy()}
    npz = keras_models.npz_bytes(arrays)
    spec = {"custom_objects": {"Clip6": "relu6"}, "train": {"max_steps": 10, "batch_size": 16}}

    # Uploaded first (POST /models), then referenced.
    response = client.post("/models", files={"file": ("clip.h5", content)})
    assert response.status_code == 201, response.text
    assert response.json()["custom_names"] == ["Clip6"]
    data = _upload(client, "/datasets", "c.npz", npz)
    referenced = {**spec, "keras_model_path": response.json()["id"]}
    referenced["train"] = {**spec["train"], "dataset": data}
    assert _run(client, referenced)["progress"]["global_step"] == 10
    unmapped = {k: v for k, v in referenced.items() if k != "custom_objects"}
    response = client.post("/convert", json=unmapped)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["custom_objects"]
    assert "'Clip6'" in response.json()["errors"][0]["msg"]

    # One multipart request with the files: the same rule.
    answers = [
        client.post(
            "/convert",
            data={"spec": json.dumps(body)},
            files={"model": ("clip.h5", content), "train_data": ("c.npz", npz)},
        )
        for body in (spec, {"train": spec["train"]})
    ]
    assert [a.status_code for a in answers] == [202, 422], answers[1].text
    assert answers[1].json()["errors"][0]["loc"] == ["custom_objects"]
    assert "'Clip6'" in answers[1].json()["errors"][0]["msg"]
    job = wait_for_job(client, answers[0].json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["global_step"] == 10
