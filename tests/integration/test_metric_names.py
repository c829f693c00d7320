"""Metric objects on named outputs: the names k2e reports are the evaluation's keys.

The Estimator itself names ``AUC(name="auc")`` on output ``d`` ``d_d_d_auc`` (each of the
conversion's three compiles prefixes the object's name again); k2e reports ``d_auc`` and
maps it, on every path: HDF5, ``.keras`` and an inline model.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

pytestmark = pytest.mark.integration

DOCUMENTED = ["c_mae", "d_auc", "d_precision", "d_auc_1"]


def _model() -> tf.keras.Model:
    a = tf.keras.Input((4,), name="a")
    hidden = tf.keras.layers.Dense(8, activation="relu", name="h")(a)
    c = tf.keras.layers.Dense(1, name="c")(hidden)
    d = tf.keras.layers.Dense(1, activation="sigmoid", name="d")(hidden)
    return tf.keras.Model(a, [c, d])


def _compiled() -> tf.keras.Model:
    model = _model()
    model.compile(
        optimizer="sgd",
        loss={"c": "mse", "d": "binary_crossentropy"},
        metrics={
            "c": ["mae"],
            "d": [tf.keras.metrics.AUC(name="auc"), tf.keras.metrics.Precision(name="precision")],
        },
        weighted_metrics={"d": [tf.keras.metrics.AUC(name="auc")]},
    )
    return model


@pytest.fixture(scope="module")
def dataset(client, tmp_path_factory) -> str:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(128, 4)).astype("float32")
    arrays = {"a": a, "c": a.sum(axis=1), "d": (a[:, 0] > 0).astype("float32")}
    response = client.post("/datasets", files={"file": ("d.npz", keras_models.npz_bytes(arrays))})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _evaluate(client, dataset: str, **model: object) -> dict:
    spec = {
        **model,
        "config": {"tf_random_seed": 1},
        "train": {"dataset": dataset, "max_steps": 5, "batch_size": 32},
        "eval": {"dataset": dataset},
    }
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return job["metrics"]["eval"]


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_a_map_written_from_model_info_maps_every_evaluation_key(
    client, worker, dataset, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"m{suffix}"
    _compiled().save(path, save_format="h5" if suffix == ".h5" else "keras")
    response = client.post("/models", files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 201, response.text
    info = response.json()
    assert info["metric_names"] == DOCUMENTED

    renamed = {name: f"m_{i}" for i, name in enumerate(info["metric_names"])}
    evaluated = _evaluate(client, dataset, keras_model_path=info["id"], metric_names_map=renamed)
    assert set(evaluated) == {*renamed.values(), "loss", "global_step"}, evaluated
    assert 0 <= evaluated["m_1"] <= 1  # an AUC

    # Without a map, the evaluation reports the documented names themselves.
    plain = _evaluate(client, dataset, keras_model_path=info["id"])
    assert set(plain) == {*DOCUMENTED, "loss", "global_step"}, plain


def test_an_inline_model_reports_and_maps_the_documented_names(client, worker, dataset) -> None:
    auc = {"class_name": "AUC", "config": {"name": "auc"}}
    compile_args = {
        "optimizer": "sgd",
        "loss": {"c": "mse", "d": "binary_crossentropy"},
        "metrics": {"c": ["mae"], "d": [auc, {"class_name": "Precision", "config": {}}]},
        "weighted_metrics": {"d": [auc]},
    }
    inline = {"config": json.loads(_model().to_json()), "compile": compile_args}
    # A map that misses a name is refused naming what it must map: the documented names.
    response = client.post(
        "/convert",
        json={
            "keras_model": inline,
            "metric_names_map": {"c_mae": "x"},
            "train": {"dataset": dataset, "max_steps": 1},
        },
    )
    assert response.status_code == 422, response.text
    assert "d_auc" in response.text
    assert "d_d_d_auc" not in response.text

    renamed = {name: name.upper() for name in DOCUMENTED}
    evaluated = _evaluate(client, dataset, keras_model=inline, metric_names_map=renamed)
    assert set(evaluated) == {*renamed.values(), "loss", "global_step"}, evaluated
