"""A dry run's plan against the job that follows it, through a real worker: the plan's
``eval_metric_keys`` are the keys of the job's ``metrics.eval``, and its signatures are
the exported SavedModel's (names, methods, input and output names, dtypes and shapes).

The models: the seed document's two examples and the accepted-specs suite's pool (HDF5
and inline, feature columns, custom objects), each plain and with export heads. The job
runs the plan's own spec (every default filled in), so that spec is checked too.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration import test_accepted_specs_run as breadth
from tests.support.job_polling import wait_for_job

tf = pytest.importorskip("tensorflow")
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

from tests.support import keras_models  # noqa: E402
from tests.support.job_outputs import extract_savedmodel  # noqa: E402
from tests.support.uploads import upload  # noqa: E402

pytestmark = pytest.mark.integration
# The accepted-specs suite's models and their datasets, uploaded once for this module.
pool = breadth.pool

METHODS = {
    "tensorflow/serving/predict": "predict",
    "tensorflow/serving/classify": "classify",
    "tensorflow/serving/regress": "regress",
}


def _tensors(infos: Any) -> dict[str, tuple[str, list[int | None] | None]]:
    found = {}
    for key, info in infos.items():
        shape = info.tensor_shape
        dims = None if shape.unknown_rank else [d.size if d.size >= 0 else None for d in shape.dim]
        found[key] = (tf.as_dtype(info.dtype).name, dims)
    return found


def exported_signatures(export_dir: Path) -> dict[str, Any]:
    """The SavedModel's signatures as the plan states them, read from saved_model.pb."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    (meta,) = saved.meta_graphs
    return {
        name: (METHODS[sig.method_name], _tensors(sig.inputs), _tensors(sig.outputs))
        for name, sig in meta.signature_def.items()
        if not name.startswith("__")
    }


def planned(plan: dict[str, Any]) -> dict[str, Any]:
    def tensors(items: list[dict[str, Any]]) -> dict[str, Any]:
        return {t["name"]: (t["dtype"], t["shape"]) for t in items}

    return {
        s["name"]: (s["method"], tensors(s["inputs"]), tensors(s["outputs"]))
        for s in plan["signatures"]
    }


def plan_then_run(client, spec: dict[str, Any], into: Path) -> tuple[dict, dict]:
    """The dry run's plan, and the job of the plan's spec once it has ended."""
    response = client.post("/convert?dry_run=true", json=spec)
    assert response.status_code == 200, response.text
    plan = response.json()
    submitted = client.post("/convert", json=plan["spec"])
    assert submitted.status_code == 202, submitted.text
    job = wait_for_job(client, submitted.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert sorted(plan["eval_metric_keys"]) == sorted(job["metrics"]["eval"])
    if plan["spec"]["export"]:
        exported = exported_signatures(extract_savedmodel(client, job["id"], into))
        assert planned(plan) == as_planned(exported, plan), json.dumps(plan["signatures"])
    return plan, job


def unknown_shapes(plan: dict[str, Any], side: str = "both") -> list[str]:
    """The tensors whose rank the plan says it cannot know (``shape: null``): outputs
    after a layer whose output shape no config tells without TensorFlow (a custom layer);
    never an input."""
    sides = ("inputs", "outputs") if side == "both" else (side,)
    return [
        f"{s['name']}.{t['name']}"
        for s in plan["signatures"]
        for key in sides
        for t in s[key]
        if t["shape"] is None
    ]


def as_planned(exported: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """The exported signatures with the shapes the plan leaves unknown left unknown."""
    unknown = set(unknown_shapes(plan))
    return {
        name: (
            method,
            *(
                {
                    k: (dtype, None if f"{name}.{k}" in unknown else shape)
                    for k, (dtype, shape) in side.items()
                }
                for side in (inputs, outputs)
            ),
        )
        for name, (method, inputs, outputs) in exported.items()
    }


def test_the_seed_examples_plans_match_their_jobs(client, worker, tmp_path) -> None:
    multi = upload(
        client,
        "/models",
        "seed.h5",
        keras_models.save_h5(keras_models.seed_multi_io_model(), tmp_path / "seed.h5").read_bytes(),
    )
    multi_data = upload(
        client, "/datasets", "m.npz", keras_models.npz_bytes(keras_models.seed_multi_io_data())
    )
    spec = {
        "keras_model_path": multi["id"],
        "metric_names_map": {
            "dense_2_categorical_accuracy": "acc_1",
            "dense_3_categorical_accuracy": "acc_2",
        },
        "config": {"tf_random_seed": 1, "save_checkpoints_steps": 20},
        "train": {"dataset": multi_data["id"], "max_steps": 20},
        "eval": {"dataset": multi_data["id"], "steps": 2},
    }
    plan, job = plan_then_run(client, spec, tmp_path / "multi")
    print("seed multi-io plan:", json.dumps(plan, indent=1))
    print("its job:", json.dumps({k: job[k] for k in ("id", "metrics", "provenance")}))
    assert plan["parameters"] == keras_models.seed_multi_io_model().count_params()

    dict_model = upload(
        client,
        "/models",
        "dict.h5",
        keras_models.save_h5(keras_models.seed_dict_io_model(), tmp_path / "d.h5").read_bytes(),
    )
    dict_data = upload(
        client, "/datasets", "d.npz", keras_models.npz_bytes(keras_models.seed_dict_io_data())
    )
    spec = {
        "keras_model_path": dict_model["id"],
        "export_outputs": {"c": "regression", "d": "classification"},
        "train": {"dataset": dict_data["id"], "max_steps": 5, "batch_size": 20},
        "eval": {"dataset": dict_data["id"], "steps": 3},
    }
    plan, _ = plan_then_run(client, spec, tmp_path / "dict")
    assert {s["name"] for s in plan["signatures"]} == {
        "serving_default",
        "c",
        "d",
        "raw:serving_default",
    }


def test_the_breadth_suites_models_plans_match_their_jobs(
    client,
    worker,
    pool,
    tmp_path,
) -> None:
    # A head each output can have: regression needs one value per example.
    kinds = {"dense_2": "classification", "dense_3": "predict", "c": "regression"}
    kinds |= {"d": "classification", "y": "regression"}
    for n, model in enumerate(pool):
        base: dict[str, Any] = {
            **model.ref,
            "train": {"dataset": model.datasets["npz"], "max_steps": 2, "batch_size": 8},
            "eval": {"dataset": model.datasets["npz"], "steps": 1, "batch_size": 8},
        }
        if model.custom_objects:
            base["custom_objects"] = dict(model.custom_objects)
        if model.metric_names:
            base["metric_names_map"] = {m: f"m{i}" for i, m in enumerate(model.metric_names)}
        heads = {o: kinds[o] for o in model.outputs}
        for variant, spec in (("plain", base), ("heads", {**base, "export_outputs": heads})):
            plan, _ = plan_then_run(client, spec, tmp_path / f"{n}-{variant}")
            assert plan["parameters"] > 0, model.name
            assert not unknown_shapes(plan, "inputs"), model.name
            if "registry layer" not in model.name:
                assert not unknown_shapes(plan), model.name
            assert np.isfinite(plan["memory_bytes"])
