"""Untrusted model files against a real worker: a Lambda layer's code never runs, on any
path (upload, a file under the storage root, a task sent around the API), and the worker
keeps serving; a good `.keras` upload trains end to end."""

import uuid
from pathlib import Path

import numpy as np
import pytest

from k2e.jobs.job_store import JobStore, NewJob
from k2e.jobs.queueing import TaskSender
from k2e.schemas import ConvertRequest
from tests.support.api_keys import admin_files
from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pwned") / "marker"


@pytest.fixture(scope="module")
def lambda_h5(tmp_path_factory: pytest.TempPathFactory, marker: Path) -> bytes:
    """A model whose Lambda layer writes `marker` whenever Keras runs it (loading does)."""

    def pwn(x, path=str(marker)):
        open(path, "w").write("pwned")  # noqa: SIM115 - the point is the side effect
        return x

    inputs = tf.keras.Input((16,), name="input_a")
    hidden = tf.keras.layers.Lambda(pwn, name="pwn")(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="out")(hidden))
    model.compile(optimizer="sgd", loss="mse")
    path = tmp_path_factory.mktemp("hostile") / "lambda.h5"
    model.save(path, save_format="h5")
    marker.unlink(missing_ok=True)  # building the model here ran it once, in this process
    return path.read_bytes()


@pytest.fixture(scope="module")
def seed_data(client) -> str:
    data = keras_models.npz_bytes(keras_models.seed_multi_io_data(n=64))
    response = client.post("/datasets", files={"file": ("d.npz", data)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _job_count(client) -> int:
    return len(client.get("/jobs", params={"limit": 100}).json()["items"])


def test_a_lambda_upload_is_refused_and_never_runs(client, lambda_h5, marker) -> None:
    response = client.post("/models", files={"file": ("lambda.h5", lambda_h5)})
    assert response.status_code == 422, response.text
    assert "layer 'pwn' (Lambda)" in response.json()["detail"]
    assert not marker.exists()


def test_a_lambda_file_under_the_storage_root_is_refused_at_convert(
    client, settings, lambda_h5, marker, seed_data
) -> None:
    sneaky = admin_files(settings.storage_root) / "sneaky" / "lambda.h5"
    sneaky.parent.mkdir(parents=True, exist_ok=True)
    sneaky.write_bytes(lambda_h5)
    before = _job_count(client)
    spec = {
        "keras_model_path": "sneaky/lambda.h5",
        "train": {"dataset": seed_data, "max_steps": 5},
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 422, response.text
    body = response.json()
    assert "layer 'pwn' (Lambda)" in body["detail"]
    assert body["errors"][0]["loc"] == ["keras_model_path"]
    assert _job_count(client) == before, "no job was created"
    assert not marker.exists()


def test_the_worker_rechecks_a_task_sent_around_the_api_and_keeps_working(
    client, worker, settings, lambda_h5, marker, seed_data
) -> None:
    sneaky = admin_files(settings.storage_root) / "sneaky" / "lambda-direct.h5"
    sneaky.parent.mkdir(parents=True, exist_ok=True)
    sneaky.write_bytes(lambda_h5)
    job_id = str(uuid.uuid4())
    spec = {
        "keras_model_path": "sneaky/lambda-direct.h5",
        "train": {"dataset": seed_data, "max_steps": 5},
    }
    new = NewJob(job_id, "default", spec, "cpu", f"jobs/{job_id}", 5)
    JobStore(settings.sqlalchemy_url).create(new)
    TaskSender(settings).send_train(job_id, "cpu", None)

    job = wait_for_job(client, job_id, timeout=120)
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "InvalidSpec"
    assert "layer 'pwn' (Lambda)" in job["error"]["message"]
    assert not marker.exists()

    # The worker still runs a normal job.
    h5 = keras_models.save_h5(keras_models.seed_multi_io_model(), sneaky.parent / "seed.h5")
    upload = client.post("/models", files={"file": ("seed.h5", h5.read_bytes())})
    assert upload.status_code == 201, upload.text
    spec = {
        "keras_model_path": upload.json()["id"],
        "train": {"dataset": seed_data, "max_steps": 5, "batch_size": 16},
        "export": False,
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert not marker.exists()


def test_the_worker_loader_itself_refuses_lambda_bytecode(lambda_h5, marker, tmp_path) -> None:
    """The last layer, should vetting ever miss one: Keras's safe mode around the load."""
    from worker.model_building import build_keras_model

    path = tmp_path / "lambda.h5"
    path.write_bytes(lambda_h5)
    spec = ConvertRequest.model_validate(
        {"keras_model_path": "x", "train": {"dataset": "x", "max_steps": 1}}
    )
    with pytest.raises(ValueError, match="Lambda layer with a Python `lambda`"):
        build_keras_model(spec, path, {"optimizer": "sgd", "loss": "mse"})
    assert not marker.exists()


def test_a_keras_archive_converts_and_trains_with_the_documented_names(
    client, worker, tmp_path, seed_data
) -> None:
    path = tmp_path / "seed.keras"
    keras_models.seed_multi_io_model().save(path)
    response = client.post("/models", files={"file": ("seed.keras", path.read_bytes())})
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["format"] == "keras"
    spec = {
        "keras_model_path": model["id"],
        "metric_names_map": {
            "dense_2_categorical_accuracy": "acc_1",
            "dense_3_categorical_accuracy": "acc_2",
        },
        "config": {"tf_random_seed": 1, "log_step_count_steps": 5},
        "train": {"dataset": seed_data, "max_steps": 10, "batch_size": 16},
        "eval": {"dataset": seed_data, "batch_size": 32},
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["global_step"] == 10
    assert {"acc_1", "acc_2", "loss", "global_step"} <= set(job["metrics"]["eval"])
    listing = client.get(f"/jobs/{job['id']}/savedmodel")
    assert listing.status_code == 200


def test_a_model_file_swapped_after_upload_is_inspected_again_by_the_worker(
    client, worker, settings, lambda_h5, marker, tmp_path
) -> None:
    """The worker keeps an upload's stored inspection only for the bytes it describes: a
    file changed on the storage volume behind k2e's back goes through the sandbox again."""
    inputs = tf.keras.Input((16,), name="input_a")
    good = tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="out")(inputs))
    good.compile(optimizer="sgd", loss="mse")
    h5 = keras_models.save_h5(good, tmp_path / "good.h5")
    upload = client.post("/models", files={"file": ("good.h5", h5.read_bytes())})
    assert upload.status_code == 201, upload.text
    model_id = upload.json()["id"]
    arrays = {"input_a": np.zeros((32, 16), "float32"), "out": np.zeros((32, 3), "float32")}
    data = client.post("/datasets", files={"file": ("d.npz", keras_models.npz_bytes(arrays))})
    assert data.status_code == 201, data.text
    (admin_files(settings.storage_root) / "models" / model_id / "model.h5").write_bytes(lambda_h5)
    spec = {
        "keras_model_path": model_id,
        "train": {"dataset": data.json()["id"], "max_steps": 5, "batch_size": 16},
        "export": False,
    }
    response = client.post("/convert", json=spec)  # the API answers from the stored inspection
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"], timeout=120)
    assert job["status"] == "failed", job
    assert job["error"]["type"] == "InvalidSpec"
    assert "layer 'pwn' (Lambda)" in job["error"]["message"]
    assert not marker.exists()
