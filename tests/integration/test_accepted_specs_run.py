"""Property: a spec POST /convert accepts does not fail on its spec in the worker.

Random combinations of the documented fields (train, eval, config with session_config,
checkpoint_format, export, export_outputs, metric_names_map, model_dir, custom_objects)
over the test models (the seed examples from HDF5 and inline, a feature-column model, a
custom-activation model) and datasets in every format (npz, CSV, TFRecord). Each submission
is either refused (a 4xx problem naming fields) or a job that succeeds; a job may fail only
for reasons that are not its spec's (a timeout, a lost worker, memory).

CI runs a handful of examples (tiny max_steps, the session's one worker);
``K2E_SPEC_FUZZ_EXAMPLES=40`` runs longer, with fresh random examples.
"""

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)
from tests.support.dataset_files import write_csv, write_tfrecord  # noqa: E402
from tests.support.keras_models import (  # noqa: E402
    FEATURES,
    activation_model,
    identity_columns_model,
    relu6,
)

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("K2E_SPEC_FUZZ_EXAMPLES", "5"))
# Failures that are not the spec's: the run's limits, the machine.
NOT_THE_SPECS = {"timed_out", "worker_lost", "max_attempts", "out_of_memory"}
FORMATS = ("npz", "csv", "tfrecord")


@dataclass(frozen=True)
class PoolModel:
    """A model as a spec names it (an upload's id, or inline), its datasets by format."""

    name: str
    ref: dict[str, Any]
    outputs: tuple[str, ...]
    metric_names: tuple[str, ...]
    datasets: dict[str, str]
    custom_objects: dict[str, str] | None = None


def _upload(client, path: str, file: Path) -> str:
    response = client.post(path, files={"file": (file.name, file.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _datasets(client, arrays: dict[str, np.ndarray], into: Path, stem: str) -> dict[str, str]:
    npz = into / f"{stem}.npz"
    npz.write_bytes(keras_models.npz_bytes(arrays))
    files = {
        "npz": npz,
        "csv": write_csv(arrays, into / f"{stem}.csv"),
        "tfrecord": write_tfrecord(arrays, into / f"{stem}.tfrecord"),
    }
    return {fmt: _upload(client, "/datasets", path) for fmt, path in files.items()}


@pytest.fixture(scope="module")
def pool(client, tmp_path_factory) -> list[PoolModel]:
    into = tmp_path_factory.mktemp("spec-fuzz")
    seed = _datasets(client, keras_models.seed_multi_io_data(n=48), into, "seed")
    dict_data = keras_models.seed_dict_io_data(n=48)
    rng = np.random.default_rng(3)
    columns = {name: rng.integers(0, np.size(np.unique(v)), 48) for name, v in FEATURES.items()}
    columns["y"] = rng.integers(0, 2, 48).astype("float32")
    activation = {"x": rng.normal(size=(48, 4)).astype("float32"), "y": np.ones((48, 1), "f4")}

    def h5(model: Any, name: str) -> dict[str, Any]:
        return {
            "keras_model_path": _upload(client, "/models", keras_models.save_h5(model, into / name))
        }

    seed_map = ("dense_2_categorical_accuracy", "dense_3_categorical_accuracy")
    inline = {
        "keras_model": {
            "config": json.loads(keras_models.seed_multi_io_model().to_json()),
            "compile": {
                "optimizer": "rmsprop",
                "loss": "categorical_crossentropy",
                "metrics": {"dense_2": "categorical_accuracy", "dense_3": "categorical_accuracy"},
            },
        }
    }
    inputs = tf.keras.Input((4,), name="x")
    hidden = relu6(name="clip")(tf.keras.layers.Dense(8, name="hidden")(inputs))
    registry_layer = tf.keras.Model(inputs, tf.keras.layers.Dense(1, name="y")(hidden))
    registry_layer.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    with tf.keras.utils.custom_object_scope({"relu6": relu6}):
        registry_ref = h5(registry_layer, "relu6.h5")
    activation_data = _datasets(client, activation, into, "activation")
    inline_activation = {
        "keras_model": {
            "config": json.loads(activation_model().to_json()),
            "compile": {"optimizer": "adam", "loss": "mse"},
        }
    }
    mapped = {"custom_relu": "relu6_activation"}
    return [
        PoolModel(
            "registry layer as saved (HDF5)", registry_ref, ("y",), ("mae",), activation_data
        ),
        PoolModel(
            "custom activation (inline)", inline_activation, ("y",), (), activation_data, mapped
        ),
        PoolModel(
            "seed multi-io (HDF5)",
            h5(keras_models.seed_multi_io_model(), "seed.h5"),
            ("dense_2", "dense_3"),
            seed_map,
            seed,
        ),
        PoolModel("seed multi-io (inline)", inline, ("dense_2", "dense_3"), seed_map, seed),
        PoolModel(
            "seed dict-io (HDF5)",
            h5(keras_models.seed_dict_io_model(), "dict.h5"),
            ("c", "d"),
            ("c_mae", "d_categorical_accuracy"),
            _datasets(client, dict_data, into, "dict"),
        ),
        PoolModel(
            "feature columns (HDF5)",
            h5(identity_columns_model(), "columns.h5"),
            ("y",),
            ("accuracy",),
            _datasets(client, columns, into, "columns"),
        ),
        PoolModel(
            "custom activation (HDF5)",
            h5(activation_model(), "activation.h5"),
            ("y",),
            (),
            activation_data,
            mapped,
        ),
    ]


def _optional(strategy: Any) -> Any:
    return st.none() | strategy


@st.composite
def specs(draw: st.DrawFn, pool: list[PoolModel]) -> tuple[PoolModel, dict[str, Any]]:
    model = draw(st.sampled_from(pool))
    spec: dict[str, Any] = dict(model.ref)
    if model.custom_objects:
        spec["custom_objects"] = dict(model.custom_objects)
        if draw(st.booleans()):  # any registry entry: the wrong kind must be refused
            targets = st.sampled_from(["relu6", "relu6_activation"])
            spec["custom_objects"] = {k: draw(targets) for k in model.custom_objects}
    fmt = draw(st.sampled_from(FORMATS))
    if draw(st.integers(0, 4)) > 0:
        spec["train"] = {
            "dataset": model.datasets[fmt],
            "max_steps": draw(st.integers(1, 3)),
            "batch_size": draw(st.integers(1, 16) | st.integers(40, 100)),
            "shuffle": draw(st.booleans()),
            "shuffle_buffer": draw(st.integers(1, 64)),
            "drop_remainder": draw(st.booleans()),
        }
        if draw(st.booleans()):
            spec["train"]["shuffle_seed"] = draw(st.integers(-(2**31), 2**31))
    if draw(st.booleans()):
        spec["eval"] = {
            "dataset": model.datasets[draw(st.sampled_from(FORMATS))],
            "batch_size": draw(st.integers(1, 16)),
        }
        if draw(st.booleans()):
            spec["eval"]["steps"] = draw(st.integers(1, 2))
    if draw(st.booleans()):
        config: dict[str, Any] = {
            "save_summary_steps": draw(st.integers(1, 5)),
            "keep_checkpoint_max": draw(st.integers(1, 3)),
            "log_step_count_steps": draw(st.integers(1, 5)),
        }
        trigger = draw(st.sampled_from(["steps", "secs", None]))
        if trigger == "steps":
            config["save_checkpoints_steps"] = draw(st.integers(1, 3))
        elif trigger == "secs":
            config["save_checkpoints_secs"] = draw(st.integers(1, 600))
        if draw(st.booleans()):
            config["tf_random_seed"] = draw(st.integers(0, 2**31))
        if draw(st.booleans()):
            config["keep_checkpoint_every_n_hours"] = draw(st.floats(1, 1e6))
        if draw(st.integers(0, 5)) == 0:
            config["train_distribute"] = "mirrored"
        if draw(st.booleans()):
            config["model_dir"] = f"fuzz-{uuid.uuid4().hex[:12]}"
        if draw(st.booleans()):
            config["session_config"] = draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "allow_soft_placement": st.booleans(),
                        "log_device_placement": st.booleans(),
                        "inter_op_parallelism_threads": st.integers(0, 4),
                        "intra_op_parallelism_threads": st.integers(0, 4),
                        "gpu_options": st.fixed_dictionaries(
                            {},
                            optional={
                                "allow_growth": st.booleans(),
                                "per_process_gpu_memory_fraction": st.floats(0.05, 1.0),
                            },
                        ),
                    },
                )
            )
        spec["config"] = config
    if draw(st.booleans()):
        spec["model_dir"] = f"fuzz-{uuid.uuid4().hex[:12]}"
    spec["checkpoint_format"] = draw(st.sampled_from(["checkpoint", "saver"]))
    spec["export"] = draw(st.booleans())
    if draw(st.integers(0, 5)) == 0:
        spec["accelerator"] = "gpu"  # the session's worker consumes both queues
    if draw(st.booleans()):
        spec["timeout_s"] = draw(st.integers(600, 2**31 - 1))
    if draw(st.booleans()):
        heads = draw(st.lists(st.sampled_from(model.outputs), unique=True, max_size=2))
        kinds = st.sampled_from(["regression", "classification", "predict"])
        spec["export_outputs"] = {head: draw(kinds) for head in heads}
    if model.metric_names and draw(st.booleans()):
        spec["metric_names_map"] = {name: f"m{i}" for i, name in enumerate(model.metric_names)}
    return model, spec


def test_an_accepted_spec_does_not_fail_on_its_spec(client, worker, pool) -> None:
    found: list[str] = []
    counts = {"refused": 0, "succeeded": 0, "not the spec's": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize="K2E_SPEC_FUZZ_EXAMPLES" not in os.environ,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def run(data: st.DataObject) -> None:
        model, spec = data.draw(specs(pool))
        response = client.post("/convert", json=spec)
        if response.status_code != 202:
            assert 400 <= response.status_code < 500, response.text
            body = response.json()
            assert body["errors"], body
            assert all("loc" in e and e["msg"] for e in body["errors"]), body
            counts["refused"] += 1
            return
        job = wait_for_job(client, response.json()["id"])
        if job["status"] == "succeeded":
            counts["succeeded"] += 1
        elif job["error"] and job["error"]["reason"] in NOT_THE_SPECS:
            counts["not the spec's"] += 1
        else:
            found.append(f"{model.name}: {json.dumps(spec)[:1500]}\n  -> {job['error']}")

    run()
    print(f"accepted-spec property: {counts}, {len(found)} accepted specs failed")
    assert not found, "\n".join(found)
