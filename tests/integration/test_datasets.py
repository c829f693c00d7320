"""Each dataset format end to end through a real worker, sample weights, bad datasets."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.support.api_keys import admin_files
from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)
from tests.support.dataset_files import write_csv, write_tfrecord  # noqa: E402

pytestmark = pytest.mark.integration

MAP = {"dense_2_categorical_accuracy": "acc_1", "dense_3_categorical_accuracy": "acc_2"}


@pytest.fixture(scope="module")
def seed_model(client, tmp_path_factory) -> str:
    h5 = keras_models.save_h5(
        keras_models.seed_multi_io_model(), tmp_path_factory.mktemp("m") / "s.h5"
    )
    response = client.post("/models", files={"file": ("seed.h5", h5.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _upload(client, path: Path) -> dict:
    response = client.post("/datasets", files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()


def _train(client, model: str, train: str, evaluate: str, **extra) -> dict:
    spec = {
        "keras_model_path": model,
        "metric_names_map": MAP,
        "config": {"tf_random_seed": 7, "save_checkpoints_steps": 40},
        "train": {"dataset": train, "max_steps": 40, "batch_size": 16, "shuffle": False},
        "eval": {"dataset": evaluate},
        **extra,
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return job


@pytest.mark.parametrize(
    ("name", "writer"),
    [
        ("train.npz", lambda a, p: p.write_bytes(keras_models.npz_bytes(a)) and p),
        ("train.tfrecord", write_tfrecord),
        ("train.tfrecord.gz", lambda a, p: write_tfrecord(a, p, gzip=True)),
        ("train.csv", write_csv),
    ],
)
def test_each_format_trains_a_multi_io_model(
    client, worker, seed_model, tmp_path, name, writer
) -> None:
    arrays = keras_models.seed_multi_io_data(n=96)
    info = _upload(client, writer(arrays, tmp_path / name) or tmp_path / name)
    assert info["num_examples"] == 96
    assert info["arrays"]["input_a"] == [96, 16]
    assert info["arrays"]["dense_2"] == [96, 3]
    job = _train(client, seed_model, info["id"], info["id"])
    assert job["progress"]["global_step"] == 40
    assert {"acc_1", "acc_2", "loss"} <= set(job["metrics"]["eval"])
    assert job["metrics"]["eval"]["global_step"] == 40


def test_zero_weights_on_one_output_are_applied(
    client, worker, settings, seed_model, tmp_path
) -> None:
    arrays = keras_models.seed_multi_io_data(n=128)
    zeroed = dict(arrays)
    zeroed["sample_weights.dense_2"] = np.ones(128, "float32")
    zeroed["sample_weights.dense_3"] = np.zeros(128, "float32")
    (tmp_path / "plain.npz").write_bytes(keras_models.npz_bytes(arrays))
    (tmp_path / "zeroed.npz").write_bytes(keras_models.npz_bytes(zeroed))
    plain = _upload(client, tmp_path / "plain.npz")["id"]
    weighted = _upload(client, tmp_path / "zeroed.npz")["id"]

    # Same seed, same training data: the same model, evaluated with and without the weights.
    # Name-based checkpoints, so that the kernels can be found by layer name below.
    with_weights = _train(client, seed_model, weighted, weighted, checkpoint_format="saver")
    without = _train(client, seed_model, weighted, plain, checkpoint_format="saver")
    assert with_weights["metrics"]["eval"]["loss"] < without["metrics"]["eval"]["loss"]

    # Zero weight on dense_3 in training: its kernel got no gradient at all.
    step = with_weights["progress"]["global_step"]
    archive = client.get(f"/jobs/{with_weights['id']}/checkpoints/{step}")
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        tar.extractall(tmp_path / "ckpt", filter="data")
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt" / f"model.ckpt-{step}"))
    initial = tf.train.load_checkpoint(
        str(
            admin_files(settings.storage_root)
            / with_weights["model_dir"]
            / "keras"
            / "keras_model.ckpt"
        )
    )

    def kernel(r, layer: str) -> np.ndarray:
        return r.get_tensor(f"{layer}/kernel")

    np.testing.assert_array_equal(kernel(reader, "dense_3"), kernel(initial, "dense_3"))
    assert not np.array_equal(kernel(reader, "dense_2"), kernel(initial, "dense_2"))


@pytest.mark.parametrize(
    ("name", "content", "text"),
    [
        ("bad.csv", b"input_a_0,dense_2\n1,2\n3\n", "line 3 has 1 fields"),
        ("bad.csv", b"x,y\n1,2,3\n", "line 2 has 3 fields"),
        ("bad.csv", b"", "empty"),
        ("bad.tfrecord", b"\x10\x00\x00\x00\x00\x00\x00\x00junk", "record 0"),
        ("bad.npz", b"PK\x03\x04 not really", "zip"),
        ("bad.parquet", b"PAR1", "expected a file ending in"),
    ],
)
def test_bad_datasets_are_refused_naming_the_problem(client, name, content, text) -> None:
    response = client.post("/datasets", files={"file": (name, content)})
    assert response.status_code == 422, response.text
    assert text in response.json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_truncated_tfrecord_and_mismatched_weights_are_refused(client, tmp_path) -> None:
    arrays = keras_models.seed_multi_io_data(n=20)
    good = write_tfrecord(arrays, tmp_path / "t.tfrecord").read_bytes()
    response = client.post("/datasets", files={"file": ("t.tfrecord", good[:-9])})
    assert response.status_code == 422
    assert "truncated" in response.json()["detail"]

    bad_weights = dict(arrays, **{"sample_weights.dense_2": np.ones(7, "float32")})
    response = client.post(
        "/datasets", files={"file": ("w.npz", keras_models.npz_bytes(bad_weights))}
    )
    assert response.status_code == 422
    assert "sample_weights.dense_2" in response.json()["detail"]
