"""npz and CSV datasets stream into training: no dataset-sized constant in the graph."""

import io
from pathlib import Path

import numpy as np
import pytest

from tests.support.api_keys import admin_files
from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

pytestmark = pytest.mark.integration

EXAMPLES, WIDTH = 4096, 256  # 4 MiB of float32 features


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(EXAMPLES, WIDTH)).astype("float32")
    return {"x": x, "y": x[:, :4].sum(axis=1)}


def _npz_compressed(arrays: dict[str, np.ndarray], path: Path) -> Path:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # deflated members: read through zlib in chunks
    path.write_bytes(buffer.getvalue())
    return path


def _csv(arrays: dict[str, np.ndarray], path: Path) -> Path:
    header = [f"x_{i}" for i in range(WIDTH)] + ["y"]
    table = np.concatenate([arrays["x"], arrays["y"][:, None]], axis=1)
    np.savetxt(path, table, delimiter=",", header=",".join(header), comments="", fmt="%.6g")
    return path


@pytest.mark.parametrize(
    ("name", "writer"),
    [("wide.npz", _npz_compressed), ("wide.csv", _csv)],
)
def test_training_graph_holds_no_copy_of_the_dataset(
    client, worker, settings, tmp_path, name, writer
) -> None:
    arrays = _arrays()
    path = writer(arrays, tmp_path / name)
    response = client.post("/datasets", files={"file": (name, path.read_bytes())})
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["num_examples"] == EXAMPLES

    x = tf.keras.Input((WIDTH,), name="x")
    model = tf.keras.Model(x, tf.keras.layers.Dense(1, name="y")(x))
    model.compile(optimizer="sgd", loss="mse")
    h5 = keras_models.save_h5(model, tmp_path / "linear.h5")
    model_id = client.post("/models", files={"file": ("linear.h5", h5.read_bytes())}).json()["id"]
    spec = {
        "keras_model_path": model_id,
        "config": {"tf_random_seed": 3},
        "train": {"dataset": dataset["id"], "max_steps": 20, "batch_size": 64},
        "eval": {"dataset": dataset["id"], "batch_size": 512},
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert np.isfinite(job["metrics"]["eval"]["loss"])

    # The Estimator writes the training graph beside its checkpoints. A dataset fed as
    # constants would put its 4 MiB (several times that as text) into it.
    graph = admin_files(settings.storage_root) / job["model_dir"] / "graph.pbtxt"
    data_bytes = arrays["x"].nbytes
    assert graph.stat().st_size < data_bytes / 4, graph.stat().st_size
