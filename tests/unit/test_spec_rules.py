"""Every rule of the conversion spec, table-driven through the real API.

Each case asserts the status, the field in `errors[].loc`, the wording in
`detail`, and that no job was created. The documented rules answer with the
library's own words; the late-failing ones (metric_names_map, export_outputs)
are caught here, before anything is queued.
"""

import copy
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import admin_client, admin_files

tf = pytest.importorskip("tensorflow")
from tests.support import keras_models  # noqa: E402  (needs TensorFlow)

Spec = dict[str, Any]


class Wording(tuple[str, ...]):
    """The library's own words: ``detail`` must be exactly one of these alternatives."""


def library(*alternatives: str) -> Wording:
    return Wording(alternatives)


# The library's wording (tensorflow-estimator 2.15.0: keras_lib.model_to_estimator,
# keras_lib._convert_keras_metrics_to_estimator, run_config.RunConfig), written out here:
# a test must not take the text it expects from the code it checks. "specity" is the
# library's spelling.
NEITHER_MODEL = library("Either `keras_model` or `keras_model_path` needs to be provided.")
BOTH_MODELS = library("Please specity either `keras_model` or `keras_model_path`, but not both.")
NOT_COMPILED = library(
    "The given keras model has not been compiled yet. Please compile the model with "
    "`model.compile()` before calling `model_to_estimator()`."
)
CHECKPOINT_FORMAT_FOO = library('Checkpoint format must be one of "checkpoint" or "saver". Got foo')
CHECKPOINT_TRIGGER_BOTH = library(
    "`save_checkpoints_steps` and `save_checkpoints_secs` cannot be both set."
)
# The library formats these lists from sets: either order is its wording.
METRIC_MAP_MISSING = library(
    "Invalid `metric_names_map`. The following keras model metric names:"
    "\"['dense_3_categorical_accuracy']\" do not exist in the `metric_names_map` dictionary"
)
METRIC_MAP_UNEXPECTED = library(
    *(
        "Invalid `metric_names_map`. There are unexpected keys in the `metric_names_map` "
        f"dictionary. Expected keys: {expected}, Received: ['dense_9_acc']"
        for expected in (
            ["dense_2_categorical_accuracy", "dense_3_categorical_accuracy"],
            ["dense_3_categorical_accuracy", "dense_2_categorical_accuracy"],
        )
    )
)
# Mapping the HDF5 file's doubly prefixed names: both real names are missing.
METRIC_MAP_MANGLED = library(
    *(
        "Invalid `metric_names_map`. The following keras model metric names:"
        f'"{missing}" do not exist in the `metric_names_map` dictionary'
        for missing in (
            ["dense_2_categorical_accuracy", "dense_3_categorical_accuracy"],
            ["dense_3_categorical_accuracy", "dense_2_categorical_accuracy"],
        )
    )
)

# The library loads GCS paths itself; k2e refuses them (documented: "ValueError: If the
# keras_model_path is a GCS URI"), in its own words.
GCS_PATH = (
    "`keras_model_path` is a GCS URI; model_to_estimator does not support loading models from GCS."
)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _upload(client: TestClient, path: str, name: str, content: bytes) -> str:
    response = client.post(path, files={"file": (name, content)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, redis_server
) -> Iterator[tuple[TestClient, dict[str, str], Path]]:
    root = tmp_path_factory.mktemp("rules")
    settings = Settings(data_dir=root, redis_url=redis_server.url)
    with admin_client(create_app(settings)) as client:
        scratch = tmp_path_factory.mktemp("models")
        seed = keras_models.save_h5(keras_models.seed_multi_io_model(), scratch / "seed.h5")
        uncompiled = keras_models.seed_multi_io_model()
        uncompiled.save(scratch / "raw.h5", include_optimizer=False, save_format="h5")
        data = keras_models.seed_multi_io_data(n=32)
        wrong = dict(data, input_a=np.zeros((32, 5), "float32"))
        missing = {k: v for k, v in data.items() if k != "input_b"}
        text = dict(data, input_a=np.array([["x"] * 16] * 32))
        one_weight = dict(data, sample_weights=np.ones(32, "float32"))
        stray_weight = {**data, "sample_weights.nope": np.ones(32, "float32")}
        ids = {
            "model": _upload(client, "/models", "seed.h5", seed.read_bytes()),
            "uncompiled": _upload(client, "/models", "raw.h5", (scratch / "raw.h5").read_bytes()),
            "data": _upload(client, "/datasets", "d.npz", _npz(data)),
            "wrong": _upload(client, "/datasets", "w.npz", _npz(wrong)),
            "missing": _upload(client, "/datasets", "m.npz", _npz(missing)),
            "text": _upload(client, "/datasets", "t.npz", _npz(text)),
            "one_weight": _upload(client, "/datasets", "o.npz", _npz(one_weight)),
            "stray_weight": _upload(client, "/datasets", "s.npz", _npz(stray_weight)),
        }
        outside = tmp_path_factory.mktemp("outside") / "elsewhere.h5"
        outside.write_bytes(seed.read_bytes())
        tenant_root = admin_files(settings.storage_root)
        (tenant_root / "escape.h5").symlink_to(outside)
        used = tenant_root / "model_dirs" / "used"
        used.mkdir(parents=True)
        (used / "checkpoint").write_text("model_checkpoint_path: 'model.ckpt-1'\n")
        ids["inline_config"] = keras_models.seed_multi_io_model().to_json()
        yield client, ids, tenant_root


def base(ids: dict[str, str]) -> Spec:
    return {
        "keras_model_path": ids["model"],
        "train": {"dataset": ids["data"], "max_steps": 5},
        "eval": {"dataset": ids["data"]},
    }


def _set(path: str, value: Any) -> Callable[[Spec, dict[str, str]], Spec]:
    """A mutation of the base spec: `value` may be a callable of the uploaded ids."""

    def mutate(spec: Spec, ids: dict[str, str]) -> Spec:
        spec = copy.deepcopy(spec)
        *parents, leaf = path.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        resolved = value(ids) if callable(value) else value
        if resolved is _DROP:
            node.pop(leaf, None)
        else:
            node[leaf] = resolved
        return spec

    return mutate


_DROP = object()
MAP_OK = {"dense_2_categorical_accuracy": "acc_1", "dense_3_categorical_accuracy": "acc_2"}

# (case id, mutation, status, loc prefix, text in detail)
CASES = [
    ("neither-model", _set("keras_model_path", _DROP), 422, [], NEITHER_MODEL),
    (
        "both-models",
        _set("keras_model", lambda ids: {"config": {"class_name": "Functional"}}),
        422,
        [],
        BOTH_MODELS,
    ),
    ("gcs-uri", _set("keras_model_path", "gs://b/m.h5"), 422, ["keras_model_path"], GCS_PATH),
    (
        "gcs-host",
        _set("keras_model_path", "https://storage.googleapis.com/b/m.h5"),
        422,
        ["keras_model_path"],
        GCS_PATH,
    ),
    (
        "other-scheme",
        _set("keras_model_path", "s3://b/m.h5"),
        422,
        ["keras_model_path"],
        "URI schemes are not supported",
    ),
    ("absolute", _set("keras_model_path", "/etc/passwd"), 422, ["keras_model_path"], "relative"),
    ("dotdot", _set("keras_model_path", "a/../../x.h5"), 422, ["keras_model_path"], "`..`"),
    (
        "symlink-out",
        _set("keras_model_path", "escape.h5"),
        422,
        ["keras_model_path"],
        "outside the storage root",
    ),
    (
        "unknown-model-id",
        _set("keras_model_path", "f" * 32),
        422,
        ["keras_model_path"],
        "no model",
    ),
    (
        "not-compiled-h5",
        _set("keras_model_path", lambda ids: ids["uncompiled"]),
        422,
        ["keras_model_path"],
        NOT_COMPILED,
    ),
    (
        "not-compiled-inline",
        lambda spec, ids: {
            **{k: v for k, v in spec.items() if k != "keras_model_path"},
            "keras_model": {"config": __import__("json").loads(ids["inline_config"])},
        },
        422,
        ["keras_model"],
        NOT_COMPILED,
    ),
    (
        "checkpoint-format",
        _set("checkpoint_format", "foo"),
        422,
        ["checkpoint_format"],
        CHECKPOINT_FORMAT_FOO,
    ),
    (
        "custom-object-unknown",
        _set("custom_objects", {"relu6": "nope"}),
        422,
        ["custom_objects", "relu6"],
        "not in the server's custom-object registry",
    ),
    ("model-dir-unsafe", _set("model_dir", "../x"), 422, ["model_dir"], "plain folder name"),
    (
        "config-model-dir-unsafe",
        _set("config.model_dir", "a/b"),
        422,
        ["config", "model_dir"],
        "plain folder name",
    ),
    (
        "model-dir-reuse-implicit",
        _set("model_dir", "used"),
        422,
        ["model_dir"],
        "warm_start",
    ),
    (
        "config-model-dir-reuse-implicit",
        _set("config.model_dir", "used"),
        422,
        ["config", "model_dir"],
        "warm_start",
    ),
    (
        "checkpoint-steps-and-secs",
        _set("config", {"save_checkpoints_steps": 10, "save_checkpoints_secs": 10}),
        422,
        ["config"],
        CHECKPOINT_TRIGGER_BOTH,
    ),
    (
        "keep-checkpoint-max-negative",
        _set("config.keep_checkpoint_max", -1),
        422,
        ["config", "keep_checkpoint_max"],
        "greater than or equal to 0",
    ),
    (
        "save-summary-steps-zero",
        _set("config.save_summary_steps", 0),
        422,
        ["config", "save_summary_steps"],
        "greater than or equal to 1",
    ),
    (
        "log-step-count-zero",
        _set("config.log_step_count_steps", 0),
        422,
        ["config", "log_step_count_steps"],
        "greater than or equal to 1",
    ),
    (
        "keep-every-n-hours-zero",
        _set("config.keep_checkpoint_every_n_hours", 0),
        422,
        ["config", "keep_checkpoint_every_n_hours"],
        "greater than 0",
    ),
    (
        "train-distribute",
        _set("config.train_distribute", "tpu"),
        422,
        ["config", "train_distribute"],
        "mirrored",
    ),
    (
        "metric-names-map-missing",
        _set("metric_names_map", {"dense_2_categorical_accuracy": "acc_1"}),
        422,
        ["metric_names_map"],
        METRIC_MAP_MISSING,
    ),
    (
        "metric-names-map-unknown",
        _set("metric_names_map", {**MAP_OK, "dense_9_acc": "x"}),
        422,
        ["metric_names_map", "dense_9_acc"],
        METRIC_MAP_UNEXPECTED,
    ),
    (
        "metric-names-map-hdf5-mangled",
        _set("metric_names_map", {"dense_2_dense_2_dense_2_dense_2_categorical_accuracy": "a"}),
        422,
        ["metric_names_map"],
        METRIC_MAP_MANGLED,
    ),
    (
        "export-outputs-unknown-key",
        _set("export_outputs", {"dense_9": "predict"}),
        422,
        ["export_outputs", "dense_9"],
        "subset of model.output_names",
    ),
    (
        "export-outputs-regression-shape",
        _set("export_outputs", {"dense_2": "regression"}),
        422,
        ["export_outputs", "dense_2"],
        "regression head must be [batch] or [batch, 1]",
    ),
    (
        "export-outputs-kind",
        _set("export_outputs", {"dense_2": "ranking"}),
        422,
        ["export_outputs", "dense_2"],
        "'classification', 'regression' or 'predict'",
    ),
    (
        "max-steps-zero",
        _set("train.max_steps", 0),
        422,
        ["train", "max_steps"],
        "greater than or equal to 1",
    ),
    (
        "batch-size-zero",
        _set("train.batch_size", 0),
        422,
        ["train", "batch_size"],
        "greater than or equal to 1",
    ),
    (
        "eval-steps-zero",
        _set("eval.steps", 0),
        422,
        ["eval", "steps"],
        "greater than or equal to 1",
    ),
    (
        "eval-batch-zero",
        _set("eval.batch_size", 0),
        422,
        ["eval", "batch_size"],
        "greater than or equal to 1",
    ),
    (
        "dataset-unknown",
        _set("train.dataset", "0" * 32),
        422,
        ["train", "dataset"],
        "no dataset",
    ),
    (
        "dataset-wrong-shape",
        _set("train.dataset", lambda ids: ids["wrong"]),
        422,
        ["train", "dataset", "input_a"],
        "per-example shape [5]; the model expects [16]",
    ),
    (
        "dataset-missing-feature",
        _set("eval.dataset", lambda ids: ids["missing"]),
        422,
        ["eval", "dataset", "input_b"],
        "has no array 'input_b'",
    ),
    (
        "dataset-non-numeric",
        _set("train.dataset", lambda ids: ids["text"]),
        422,
        ["train", "dataset", "input_a"],
        "non-numeric",
    ),
    (
        "single-weights-multi-output",
        _set("train.dataset", lambda ids: ids["one_weight"]),
        422,
        ["train", "dataset", "sample_weights"],
        "single-output model",
    ),
    (
        "weights-unknown-output",
        _set("train.dataset", lambda ids: ids["stray_weight"]),
        422,
        ["train", "dataset", "sample_weights.nope"],
        "names no output",
    ),
    ("accelerator", _set("accelerator", "tpu"), 422, ["accelerator"], "'cpu' or 'gpu'"),
    ("unknown-field", _set("epochs", 3), 422, ["epochs"], "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(
    ("mutate", "status", "loc", "text"),
    [pytest.param(m, s, loc, t, id=case) for case, m, s, loc, t in CASES],
)
def test_rule(env, mutate, status: int, loc: list[Any], text: str | Wording) -> None:
    client, ids, _ = env
    before = client.get("/jobs").json()["items"]
    response = client.post("/convert", json=mutate(base(ids), ids))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    locs = [e["loc"] for e in body["errors"]]
    assert any(found[: len(loc)] == loc for found in locs), locs
    messages = [body["detail"], *(e["msg"] for e in body["errors"])]
    if isinstance(text, Wording):
        # A documented rule: the library's words, as they are, in `detail` and on the field.
        assert body["detail"] in text, body["detail"]
        assert any(e["msg"] in text for e in body["errors"]), messages
    else:
        assert any(text in m for m in messages), messages
    assert client.get("/jobs").json()["items"] == before, "no job may be created"


def _without_train(ids: dict[str, str]) -> Spec:
    spec = base(ids)
    del spec["train"]
    return spec


# The rules of every case that leaves `train` alone, on a job without `train` (convert and
# evaluate the uploaded weights): they apply just the same.
NO_TRAIN_CASES = [
    pytest.param(m, s, loc, t, id=case)
    for case, m, s, loc, t in CASES
    if not case.startswith(("train-", "dataset-unknown", "dataset-wrong", "dataset-non"))
    and "train" not in loc
]


@pytest.mark.parametrize(("mutate", "status", "loc", "text"), NO_TRAIN_CASES)
def test_rule_without_train(env, mutate, status: int, loc: list[Any], text: str | Wording) -> None:
    client, ids, _ = env
    before = client.get("/jobs").json()["items"]
    spec = mutate(_without_train(ids), ids)
    assert "train" not in spec
    response = client.post("/convert", json=spec)
    assert response.status_code == status, response.text
    body = response.json()
    locs = [e["loc"] for e in body["errors"]]
    assert any(found[: len(loc)] == loc for found in locs), locs
    messages = [body["detail"], *(e["msg"] for e in body["errors"])]
    if isinstance(text, Wording):
        assert body["detail"] in text, body["detail"]
    else:
        assert any(text in m for m in messages), messages
    assert client.get("/jobs").json()["items"] == before, "no job may be created"


def test_jobs_without_train_are_accepted(env) -> None:
    """Convert-only (no train, no eval) and evaluate-only jobs: no max_steps to show."""
    client, ids, _ = env
    for spec in ({"keras_model_path": ids["model"]}, _without_train(ids)):
        response = client.post("/convert", json={**spec, "metric_names_map": MAP_OK})
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["progress"] == {
            "global_step": 0,
            "max_steps": None,
            "steps_per_sec": None,
            "eta_s": None,
        }
        assert job["export"] is None


def test_the_base_spec_is_valid(env) -> None:
    """The cases above fail for their own reason: the spec they start from is accepted."""
    client, ids, _ = env
    spec = {**base(ids), "metric_names_map": MAP_OK, "export_outputs": {"dense_2": "predict"}}
    response = client.post("/convert", json=spec)
    # No worker runs here: the job is accepted and stays queued.
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"


def test_model_dir_precedence_and_explicit_warm_start(env) -> None:
    client, ids, root = env
    spec = {**base(ids), "model_dir": "fresh-run", "config": {"model_dir": "used"}}
    job = client.post("/convert", json=spec).json()
    # Shown relative to the tenant's folder: no server path in the answer.
    assert job["model_dir"] == "model_dirs/fresh-run"
    assert (root / "model_dirs").is_dir()
    assert job["warm_start_from"] is None
    spec = {**base(ids), "model_dir": "used", "warm_start": True}
    job = client.post("/convert", json=spec).json()
    assert job["warm_start_from"] == "model_dirs/used"
