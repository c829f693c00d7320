"""Fine-tuning from another job (`warm_start_from: {"job": ...}`) with a real worker: the
new job's first checkpoint (step 0) holds the source job's newest weights, not the
uploaded ones; another tenant's job answers 404 as an unknown one does."""

import io
import tarfile
import uuid

import numpy as np
import pytest

from tests.support.api_keys import bearer, new_tenant
from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)
from tests.support.uploads import upload  # noqa: E402

pytestmark = pytest.mark.integration


def _weights(client, job_id: str, step: int, into) -> dict[str, np.ndarray]:
    """The model's variables (no optimizer slots, no step) of a job's checkpoint."""
    response = client.get(f"/jobs/{job_id}/checkpoints/{step}")
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        archive.extractall(into, filter="data")
    reader = tf.train.load_checkpoint(str(into / f"model.ckpt-{step}"))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.startswith("layer_with_weights-") and "OPTIMIZER_SLOT" not in name
    }


def test_a_fine_tuning_job_starts_from_the_source_jobs_newest_checkpoint(
    client, worker, tmp_path
) -> None:
    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "seed.h5")
    model = upload(client, "/models", "seed.h5", h5.read_bytes())
    data = upload(
        client, "/datasets", "d.npz", keras_models.npz_bytes(keras_models.seed_multi_io_data())
    )
    source_spec = {
        "keras_model_path": model["id"],
        "config": {"tf_random_seed": 3, "save_checkpoints_steps": 10},
        "train": {"dataset": data["id"], "max_steps": 30},
        "export": False,
    }
    response = client.post("/convert", json=source_spec)
    assert response.status_code == 202, response.text
    source = wait_for_job(client, response.json()["id"])
    assert source["status"] == "succeeded", source["error"]

    spec = {
        "keras_model_path": model["id"],
        "warm_start_from": {"job": source["id"]},
        "config": {"tf_random_seed": 4, "save_checkpoints_steps": 1, "keep_checkpoint_max": 5},
        "train": {"dataset": data["id"], "max_steps": 2},
        "export": False,
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    assert response.json()["warm_start_from"] == f"jobs/{source['id']}/model.ckpt-30"
    tuned = wait_for_job(client, response.json()["id"])
    assert tuned["status"] == "succeeded", tuned["error"]
    assert tuned["model_dir"] == f"jobs/{tuned['id']}"
    assert tuned["progress"]["global_step"] == 2
    assert tuned["warm_start_from"] == f"jobs/{source['id']}/model.ckpt-30"

    start = _weights(client, tuned["id"], 0, tmp_path / "tuned")
    trained = _weights(client, source["id"], 30, tmp_path / "source")
    assert set(start) == set(trained)
    assert len(start) == 6  # dense_1, dense_2, dense_3: kernel and bias each
    for name, value in trained.items():
        np.testing.assert_array_equal(start[name], value, err_msg=name)
    # The uploaded weights are not the source's trained ones: a job that ignored
    # warm_start_from would fail the comparison above.
    dense_2 = tf.keras.models.load_model(str(h5)).get_layer("dense_2").kernel.numpy()
    key = "layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE"  # dense_2, in layer order
    assert trained[key].shape == dense_2.shape
    assert np.abs(trained[key] - dense_2).max() > 1e-4


def test_warm_start_from_another_tenants_job_is_not_found(client, worker, tmp_path) -> None:
    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "seed.h5")
    model = upload(client, "/models", "seed.h5", h5.read_bytes())
    data = upload(
        client, "/datasets", "d.npz", keras_models.npz_bytes(keras_models.seed_multi_io_data(n=32))
    )
    spec = {
        "keras_model_path": model["id"],
        "train": {"dataset": data["id"], "max_steps": 2},
        "export": False,
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    source = wait_for_job(client, response.json()["id"])
    assert source["status"] == "succeeded", source["error"]

    other = bearer(new_tenant(client, f"ft-{uuid.uuid4().hex[:8]}"))
    theirs = {
        "keras_model_path": upload_as(client, other, h5.read_bytes()),
        "warm_start_from": {"job": source["id"]},
    }
    refused = client.post("/convert", json=theirs, headers=other)
    unknown = client.post(
        "/convert", json={**theirs, "warm_start_from": {"job": str(uuid.uuid4())}}, headers=other
    )
    for answer in (refused, unknown):
        assert answer.status_code == 404, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
    assert "no job with id" in refused.json()["detail"]
    assert "no job with id" in unknown.json()["detail"]

    # A job with no checkpoint (convert-only) is no place to start from: 422 on the field.
    response = client.post("/convert", json={"keras_model_path": model["id"], "export": False})
    assert response.status_code == 202, response.text
    empty = wait_for_job(client, response.json()["id"])
    assert empty["status"] == "succeeded", empty["error"]
    answer = client.post("/convert", json={**spec, "warm_start_from": {"job": empty["id"]}})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["loc"] == ["warm_start_from", "job"]
    assert "no checkpoint" in answer.json()["detail"]


def upload_as(client, headers: dict[str, str], content: bytes) -> str:
    response = client.post("/models", files={"file": ("m.h5", content)}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]
