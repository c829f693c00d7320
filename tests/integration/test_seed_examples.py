"""The seed document's two examples, end to end through REST and a real worker."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.integration.conftest import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests import models  # noqa: E402  (needs TensorFlow)

pytestmark = pytest.mark.integration


def upload(client, path: str, name: str, content: bytes) -> dict:
    response = client.post(path, files={"file": (name, content)})
    assert response.status_code == 201, response.text
    return response.json()


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


def test_multi_io_example_trains_evaluates_with_mapped_names_and_exports(
    client, worker, tmp_path
) -> None:
    h5 = models.save_h5(models.seed_multi_io_model(), tmp_path / "seed.h5")
    model = upload(client, "/models", "seed.h5", h5.read_bytes())
    assert model["compiled"] is True
    assert [i["name"] for i in model["inputs"]] == ["input_a", "input_b"]
    assert model["metric_names"] == ["dense_2_categorical_accuracy", "dense_3_categorical_accuracy"]
    data = upload(client, "/datasets", "train.npz", models.npz_bytes(models.seed_multi_io_data()))
    assert data["num_examples"] == 256

    spec = {
        "keras_model_path": model["id"],
        "metric_names_map": {
            "dense_2_categorical_accuracy": "acc_1",
            "dense_3_categorical_accuracy": "acc_2",
        },
        "config": {"tf_random_seed": 1, "save_checkpoints_steps": 20, "log_step_count_steps": 10},
        "train": {"dataset": data["id"], "max_steps": 60, "batch_size": 32},
        "eval": {"dataset": data["id"], "batch_size": 64},
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/jobs/{job_id}"

    job = wait_for_job(client, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1
    assert job["progress"]["global_step"] == 60
    assert {"acc_1", "acc_2", "loss", "global_step"} <= set(job["metrics"]["eval"])
    assert job["metrics"]["eval"]["global_step"] == 60
    assert 0.0 <= job["metrics"]["eval"]["acc_1"] <= 1.0
    assert job["metrics"]["train"], "the loss curve has points"
    assert all(p["loss"] > 0 for p in job["metrics"]["train"])

    checkpoints = client.get(f"/jobs/{job_id}/checkpoints").json()
    assert 60 in [c["step"] for c in checkpoints]
    ckpt = client.get(f"/jobs/{job_id}/checkpoints/60")
    assert ckpt.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(ckpt.content), mode="r:gz") as archive:
        assert "model.ckpt-60.index" in archive.getnames()
    assert client.get(f"/jobs/{job_id}/checkpoints/59").status_code == 404

    exported = extract_savedmodel(client, job_id, tmp_path / "export")
    loaded = tf.saved_model.load(str(exported))
    serve = loaded.signatures["serving_default"]
    batch = models.seed_multi_io_data(n=5, seed=9)
    out = serve(input_a=tf.constant(batch["input_a"]), input_b=tf.constant(batch["input_b"]))
    assert out["dense_2"].shape == (5, 3)
    assert out["dense_3"].shape == (5, 2)
    np.testing.assert_allclose(out["dense_2"].numpy().sum(axis=1), 1.0, rtol=1e-5)


def _example(a: np.ndarray, b: np.ndarray) -> bytes:
    feature = {
        "a": tf.train.Feature(float_list=tf.train.FloatList(value=a.tolist())),
        "b": tf.train.Feature(float_list=tf.train.FloatList(value=b.tolist())),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_dict_io_example_with_sample_weights_exports_serving_heads(
    client, worker, tmp_path
) -> None:
    h5 = models.save_h5(models.seed_dict_io_model(), tmp_path / "dict.h5")
    arrays = models.seed_dict_io_data()
    spec = {
        "export_outputs": {"c": "regression", "d": "classification"},
        "config": {"tf_random_seed": 2, "save_checkpoints_steps": 25},
        "train": {"max_steps": 50, "batch_size": 20},
        "eval": {"steps": 3},
    }
    npz = models.npz_bytes(arrays)
    response = client.post(
        "/convert",
        data={"spec": json.dumps(spec)},
        files={
            "model": ("dict.h5", h5.read_bytes()),
            "train_data": ("d.npz", npz),
            "eval_data": ("d.npz", npz),
        },
    )
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["spec"]["keras_model_path"] == job["spec"]["keras_model_path"].strip()
    assert {"c_mae", "d_categorical_accuracy", "loss"} <= set(job["metrics"]["eval"])

    exported = extract_savedmodel(client, job["id"], tmp_path / "export")
    loaded = tf.saved_model.load(str(exported))
    signatures = set(loaded.signatures.keys())
    assert {"serving_default", "c", "d"} <= signatures
    raw = [s for s in signatures if s.startswith("raw:")]
    assert raw, f"a raw-tensor signature is exported: {signatures}"

    examples = tf.constant([_example(arrays["a"][i], arrays["b"][i]) for i in range(4)])
    regress = loaded.signatures["c"](inputs=examples)
    assert regress["outputs"].shape[0] == 4
    classify = loaded.signatures["d"](inputs=examples)
    assert classify["scores"].shape == (4, 3)
    predict_raw = loaded.signatures["raw:serving_default"](
        a=tf.constant(arrays["a"][:4]), b=tf.constant(arrays["b"][:4])
    )
    assert predict_raw["c"].shape == (4, 1)
    assert predict_raw["d"].shape == (4, 3)
