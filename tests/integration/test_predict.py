"""POST /jobs/{id}/predict on a real worker: the exported SavedModel's outputs for JSON
instances equal the uploaded Keras model's own."""

import numpy as np
import pytest

from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)
from tests.support.uploads import upload  # noqa: E402

pytestmark = pytest.mark.integration


def test_predict_runs_the_export_on_a_worker(client, worker, tmp_path) -> None:
    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "seed.h5")
    model = upload(client, "/models", "seed.h5", h5.read_bytes())
    response = client.post("/convert", json={"keras_model_path": model["id"]})
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]

    rng = np.random.default_rng(8)
    a = rng.normal(size=(3, 16)).astype("float32")
    b = rng.normal(size=(3, 16)).astype("float32")
    instances = [{"input_a": a[i].tolist(), "input_b": b[i].tolist()} for i in range(3)]
    answer = client.post(f"/jobs/{job['id']}/predict", json={"instances": instances})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["signature_name"] == "serving_default"
    assert len(body["predictions"]) == 3
    keras = tf.keras.models.load_model(str(h5), compile=False)
    want_2, want_3 = (t.numpy() for t in keras([a, b]))
    got_2 = np.array([p["dense_2"] for p in body["predictions"]])
    got_3 = np.array([p["dense_3"] for p in body["predictions"]])
    assert np.abs(got_2 - want_2).max() <= 1e-6
    assert np.abs(got_3 - want_3).max() <= 1e-6

    # Instances the signature does not take: 422 with the worker's reason.
    wrong = client.post(f"/jobs/{job['id']}/predict", json={"instances": [{"input_a": [0.0]}]})
    assert wrong.status_code == 422, wrong.text
    assert "input_b" in wrong.json()["detail"]
    short = [{"input_a": [0.0] * 5, "input_b": [0.0] * 16}]
    shape = client.post(f"/jobs/{job['id']}/predict", json={"instances": short})
    assert shape.status_code == 422, shape.text
    assert "'input_a' has shape [1, 5]" in shape.json()["detail"]
    unknown = client.post(
        f"/jobs/{job['id']}/predict", json={"instances": instances, "signature_name": "nope"}
    )
    assert unknown.status_code == 422
    assert "serving_default" in unknown.json()["detail"]
