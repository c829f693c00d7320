"""k2e accepts what model_to_estimator accepts and refuses at submission what would fail:
scenarios of tensorflow-estimator 2.15's own model_to_estimator tests, through the REST API
and a real worker."""

import json

import numpy as np
import pytest

from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)
from tests.support.job_outputs import extract_savedmodel  # noqa: E402
from tests.support.keras_models import (  # noqa: E402
    FEATURES,
    activation_model,
    identity_columns_model,
    relu6,
)

pytestmark = pytest.mark.integration
L = tf.keras.layers


def _upload(client, path: str, name: str, content: bytes) -> dict:
    response = client.post(path, files={"file": (name, content)})
    assert response.status_code == 201, response.text
    return response.json()


def _succeeds(client, spec: dict) -> dict:
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return job


def _refused(client, spec: dict) -> dict:
    response = client.post("/convert", json=spec)
    assert response.status_code == 422, response.text
    return response.json()


def _log(client, job_id: str) -> str:
    return "\n".join(e["message"] for e in client.get(f"/jobs/{job_id}/logs").json()["items"])


# --- feature columns read the features, not the Inputs' shapes ------------------------------


def test_feature_columns_train_on_scalar_features_and_the_export_serves_them(
    client, worker, tmp_path
) -> None:
    h5 = keras_models.save_h5(identity_columns_model(), tmp_path / "columns.h5")
    model = _upload(client, "/models", "columns.h5", h5.read_bytes())
    rng = np.random.default_rng(0)
    arrays = {name: rng.integers(0, np.size(np.unique(v)), 64) for name, v in FEATURES.items()}
    arrays["y"] = rng.integers(0, 2, 64).astype("float32")
    data = _upload(client, "/datasets", "scalars.npz", keras_models.npz_bytes(arrays))
    assert data["arrays"]["cp"] == [64]  # one id per example, where the Input says (4,)
    job = _succeeds(
        client,
        {
            "keras_model_path": model["id"],
            "train": {"dataset": data["id"], "max_steps": 10, "batch_size": 8},
            "eval": {"dataset": data["id"]},
        },
    )
    assert job["progress"]["global_step"] == 10
    assert job["export"]["verified"], job["export"]

    loaded = tf.saved_model.load(str(extract_savedmodel(client, job["id"], tmp_path / "sm")))
    serve = loaded.signatures["serving_default"]
    feed = {name: tf.constant(np.int64([0, 1, 1])) for name in FEATURES}
    assert serve.structured_input_signature[1]["cp"].shape.as_list() == [None]
    assert serve(**feed)["y"].shape == (3, 1)

    # A feature the columns cannot read is still refused, naming it and why.
    arrays["cp"] = rng.integers(0, 4, (64, 3))
    bad = _upload(client, "/datasets", "wide.npz", keras_models.npz_bytes(arrays))
    body = _refused(
        client,
        {"keras_model_path": model["id"], "train": {"dataset": bad["id"], "max_steps": 1}},
    )
    assert body["errors"][0]["loc"] == ["train", "dataset", "cp"]
    assert "per-example shape [3]" in body["errors"][0]["msg"]


# --- custom activation functions: kept at upload, mapped by kind at submission ---------------


def test_a_custom_activation_function_upload_is_kept_and_trains_when_mapped(
    client, worker, tmp_path
) -> None:
    h5 = keras_models.save_h5(activation_model(), tmp_path / "act.h5")
    model = _upload(client, "/models", "act.h5", h5.read_bytes())
    assert model["custom_names"] == ["custom_relu"]
    arrays = {"x": np.random.default_rng(1).normal(size=(32, 4)), "y": np.ones((32, 1))}
    data = _upload(client, "/datasets", "a.npz", keras_models.npz_bytes(arrays))
    spec = {"keras_model_path": model["id"], "train": {"dataset": data["id"], "max_steps": 5}}

    body = _refused(client, spec)
    assert body["errors"][0]["loc"] == ["custom_objects"]
    assert "activation function 'custom_relu'" in body["errors"][0]["msg"]

    kinds = {o["name"]: o["kind"] for o in client.get("/custom-objects").json()}
    assert kinds["relu6_activation"] == "activation"
    job = _succeeds(client, {**spec, "custom_objects": {"custom_relu": "relu6_activation"}})
    assert job["progress"]["global_step"] == 5


def test_a_mapping_of_the_wrong_kind_is_refused_at_submission(client) -> None:
    config = json.loads(activation_model().to_json())
    spec = {
        "keras_model": {"config": config, "compile": {"optimizer": "sgd", "loss": "mse"}},
        "custom_objects": {"custom_relu": "relu6"},  # a layer class, used as an activation
    }
    body = _refused(client, spec)
    assert body["errors"][0]["loc"] == ["custom_objects", "custom_relu"]
    msg = body["errors"][0]["msg"]
    assert "as an activation function" in msg
    assert "'relu6' is a layer" in msg
    assert "relu6_activation" in msg


# --- a pass-through model: refused with the reason --------------------------------------------


def test_an_output_named_like_its_input_is_refused_at_submission(client) -> None:
    """The library's test_sample_weights model: its output is its input."""
    inputs = tf.keras.Input(shape=1, name="input_layer")
    model = tf.keras.Model(inputs=inputs, outputs=inputs)
    spec = {
        "keras_model": {
            "config": json.loads(model.to_json()),
            "compile": {"optimizer": "adam", "loss": "mean_absolute_error"},
        }
    }
    body = _refused(client, spec)
    assert body["errors"][0]["loc"] == ["keras_model"]
    assert "output 'input_layer' has the name of its input" in body["errors"][0]["msg"]


# --- RunConfig.session_config, and model_dir's precedence, said in the job's log --------------


def test_session_config_is_applied_and_model_dir_precedence_logged(client, worker) -> None:
    arrays = keras_models.seed_multi_io_data()
    data = _upload(client, "/datasets", "seed.npz", keras_models.npz_bytes(arrays))
    config = json.loads(keras_models.seed_multi_io_model().to_json())
    spec = {
        "keras_model": {
            "config": config,
            "compile": {"optimizer": "rmsprop", "loss": "categorical_crossentropy"},
        },
        "model_dir": "fidelity-argument",
        "config": {
            "model_dir": "fidelity-config",
            "session_config": {
                "allow_soft_placement": True,
                "inter_op_parallelism_threads": 2,
                "intra_op_parallelism_threads": 1,
                "gpu_options": {"allow_growth": True, "per_process_gpu_memory_fraction": 0.3},
            },
        },
        "train": {"dataset": data["id"], "max_steps": 3},
        "export": False,
    }
    bad = json.loads(json.dumps(spec))
    bad["config"]["session_config"]["device_count"] = {"GPU": 0}
    body = _refused(client, bad)
    assert body["errors"][0]["loc"][-3:] == ["config", "session_config", "device_count"]
    bad["config"]["session_config"] = {"intra_op_parallelism_threads": 100000}
    body = _refused(client, bad)
    assert body["errors"][0]["loc"][-2:] == ["session_config", "intra_op_parallelism_threads"]

    job = _succeeds(client, spec)
    assert job["model_dir"] == "model_dirs/fidelity-argument"
    log = _log(client, job["id"])
    line = next(line for line in log.splitlines() if "session_config: " in line)
    for field in (
        "allow_soft_placement: true",
        "inter_op_parallelism_threads: 2",
        "intra_op_parallelism_threads: 1",
        "allow_growth: true",
        "per_process_gpu_memory_fraction: 0.3",
    ):
        assert field in line, line
    assert "model_dir 'fidelity-argument' wins over config.model_dir 'fidelity-config'" in log


def test_a_registry_layer_saved_under_its_name_trains_without_a_mapping(
    client, worker, tmp_path
) -> None:
    """The registry's names are usable as they are: Keras finds them in the job's scope."""
    inputs = tf.keras.Input((4,), name="x")
    hidden = relu6(name="clip")(L.Dense(8, name="hidden")(inputs))
    model = tf.keras.Model(inputs, L.Dense(1, name="y")(hidden))
    model.compile(optimizer="sgd", loss="mse")
    with tf.keras.utils.custom_object_scope({"relu6": relu6}):
        model.save(tmp_path / "relu6.h5", save_format="h5")
    uploaded = _upload(client, "/models", "relu6.h5", (tmp_path / "relu6.h5").read_bytes())
    assert uploaded["custom_names"] == []
    arrays = {"x": np.random.default_rng(2).normal(size=(32, 4)), "y": np.ones((32, 1))}
    data = _upload(client, "/datasets", "r.npz", keras_models.npz_bytes(arrays))
    job = _succeeds(
        client,
        {"keras_model_path": uploaded["id"], "train": {"dataset": data["id"], "max_steps": 3}},
    )
    assert job["progress"]["global_step"] == 3
