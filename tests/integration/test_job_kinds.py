"""Convert-only and evaluate-only jobs (no `train`), verified exports and TF Serving
warm-up requests, through REST and a real worker.

The downloaded SavedModel is compared with the uploaded Keras model itself, loaded in
this process from the very file that was uploaded.
"""

import json

import numpy as np
import pytest

from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models, warmup_records  # noqa: E402  (needs TensorFlow)
from tests.support.job_outputs import extract_savedmodel  # noqa: E402
from tests.support.uploads import upload  # noqa: E402

pytestmark = pytest.mark.integration

SEED_MAP = {"dense_2_categorical_accuracy": "acc_1", "dense_3_categorical_accuracy": "acc_2"}


def _seed_upload(client, tmp_path) -> tuple[dict, tf.keras.Model]:
    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "seed.h5")
    info = upload(client, "/models", "seed.h5", h5.read_bytes())
    return info, tf.keras.models.load_model(str(h5), compile=False)


def _assert_same_predictions(exported, keras_model) -> None:
    rng = np.random.default_rng(5)
    x_a = rng.normal(size=(7, 16)).astype("float32")
    x_b = rng.normal(loc=1.0, size=(7, 16)).astype("float32")
    want_2, want_3 = (t.numpy() for t in keras_model([x_a, x_b]))
    out = tf.saved_model.load(str(exported)).signatures["serving_default"](
        input_a=tf.constant(x_a), input_b=tf.constant(x_b)
    )
    assert np.abs(out["dense_2"].numpy() - want_2).max() <= 1e-6
    assert np.abs(out["dense_3"].numpy() - want_3).max() <= 1e-6
    # A model with other weights would not pass: the check can fail.
    other_2, _ = (t.numpy() for t in keras_model([x_b, x_a]))
    assert np.abs(other_2 - want_2).max() > 1e-3


def test_convert_only_exports_the_uploaded_weights_verified_with_warmup(
    client, worker, tmp_path
) -> None:
    model, keras_model = _seed_upload(client, tmp_path)
    response = client.post("/convert", json={"keras_model_path": model["id"]})
    assert response.status_code == 202, response.text
    assert response.json()["progress"]["max_steps"] is None
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["global_step"] == 0
    assert job["progress"]["max_steps"] is None
    assert job["metrics"] == {"train": [], "eval": {}}
    check = job["export"]
    assert check["verified"] is True, check
    assert check["examples_from"] == "generated"
    assert check["examples"] == 32
    assert check["max_abs_diff"] <= 1e-6
    assert check["signatures"] == ["serving_default"]
    assert check["warmup_requests"] == 1

    exported = extract_savedmodel(client, job["id"], tmp_path / "export")
    _assert_same_predictions(exported, keras_model)

    # The warm-up file: one PredictionLog for serving_default with a few generated
    # examples, runnable against the exported signature.
    logs = warmup_records.read(exported)
    assert [log.signature for log in logs] == ["serving_default"]
    inputs = logs[0].inputs
    assert set(inputs) == {"input_a", "input_b"}
    assert inputs["input_a"].shape == (3, 16)
    assert inputs["input_a"].dtype == np.float32
    served = tf.saved_model.load(str(exported)).signatures["serving_default"]
    out = served(**{k: tf.constant(v) for k, v in inputs.items()})
    want_2, _ = (t.numpy() for t in keras_model([inputs["input_a"], inputs["input_b"]]))
    assert np.abs(out["dense_2"].numpy() - want_2).max() <= 1e-6


def test_evaluate_only_evaluates_the_uploaded_weights_under_mapped_names(
    client, worker, tmp_path
) -> None:
    model, keras_model = _seed_upload(client, tmp_path)
    arrays = keras_models.seed_multi_io_data(n=64, seed=4)
    data = upload(client, "/datasets", "eval.npz", keras_models.npz_bytes(arrays))
    spec = {
        "keras_model_path": model["id"],
        "metric_names_map": SEED_MAP,
        "eval": {"dataset": data["id"], "batch_size": 64},
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    evaluated = job["metrics"]["eval"]
    assert set(evaluated) == {"acc_1", "acc_2", "loss", "global_step"}, evaluated
    assert evaluated["global_step"] == 0
    # The uploaded weights' own accuracy on the evaluation data.
    head_2, head_3 = (t.numpy() for t in keras_model([arrays["input_a"], arrays["input_b"]]))
    acc_1 = np.mean(head_2.argmax(1) == arrays["dense_2"].argmax(1))
    acc_2 = np.mean(head_3.argmax(1) == arrays["dense_3"].argmax(1))
    assert evaluated["acc_1"] == pytest.approx(acc_1, abs=1e-6)
    assert evaluated["acc_2"] == pytest.approx(acc_2, abs=1e-6)

    check = job["export"]
    assert check["verified"] is True, check
    assert check["examples_from"] == "eval"
    assert check["examples"] == 64
    exported = extract_savedmodel(client, job["id"], tmp_path / "export")
    _assert_same_predictions(exported, keras_model)
    logs = warmup_records.read(exported)
    assert len(logs) == 1
    np.testing.assert_array_equal(logs[0].inputs["input_a"], arrays["input_a"][:3])


def test_trained_heads_export_verified_with_a_warmup_request_per_signature(
    client, worker, tmp_path
) -> None:
    h5 = keras_models.save_h5(keras_models.seed_dict_io_model(), tmp_path / "dict.h5")
    arrays = keras_models.seed_dict_io_data()
    spec = {
        "export_outputs": {"c": "regression", "d": "classification"},
        "config": {"tf_random_seed": 2},
        "train": {"max_steps": 5, "batch_size": 20},
    }
    response = client.post(
        "/convert",
        data={"spec": json.dumps(spec)},
        files={
            "model": ("dict.h5", h5.read_bytes()),
            "train_data": ("d.npz", keras_models.npz_bytes(arrays)),
        },
    )
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    check = job["export"]
    assert check["verified"] is True, check
    assert check["examples_from"] == "train"
    assert check["examples"] == 200
    assert check["signatures"] == ["c", "d", "raw:serving_default", "serving_default"]

    exported = extract_savedmodel(client, job["id"], tmp_path / "export")
    logs = warmup_records.read(exported)
    assert sorted(log.signature for log in logs) == check["signatures"]
    loaded = tf.saved_model.load(str(exported))
    for log in logs:
        function = loaded.signatures[log.signature]
        out = function(**{k: tf.constant(v) for k, v in log.inputs.items()})
        assert all(v.shape[0] == 3 for v in out.values()), (log.signature, out)
        if log.signature in ("c", "d", "serving_default"):
            # Parsing signatures: the request carries 3 serialized tf.Examples.
            (value,) = log.inputs.values()
            parsed = tf.train.Example.FromString(value[0])
            np.testing.assert_allclose(
                parsed.features.feature["a"].float_list.value, arrays["a"][0], rtol=1e-6
            )
