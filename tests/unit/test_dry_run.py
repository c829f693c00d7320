"""POST /convert?dry_run=true: the plan of a job (its metric keys, signatures, parameters,
memory and queue), with nothing kept: no job, no upload, no quota used."""

import json

import pytest

from tests.support.uploads import upload

SEED_MAP = {"dense_2_categorical_accuracy": "acc_1", "dense_3_categorical_accuracy": "acc_2"}


@pytest.fixture(scope="module")
def seed_ids(client, seed_files) -> dict[str, str]:
    model = upload(client, "/models", "seed.h5", seed_files["model"])
    data = upload(client, "/datasets", "seed.npz", seed_files["data"])
    return {"model": model["id"], "data": data["id"]}


def _spec(ids: dict[str, str], **overrides) -> dict:
    spec = {
        "keras_model_path": ids["model"],
        "metric_names_map": SEED_MAP,
        "train": {"dataset": ids["data"], "max_steps": 10},
        "eval": {"dataset": ids["data"]},
    }
    spec.update(overrides)
    return spec


def _kept(client) -> dict:
    """What a submission would leave behind: jobs, uploads, the tenant's usage."""
    me = client.get("/tenants/me").json()
    return {
        "jobs": [j["id"] for j in client.get("/jobs").json()["items"]],
        "models": [m["id"] for m in client.get("/models").json()["items"]],
        "datasets": [d["id"] for d in client.get("/datasets").json()["items"]],
        "usage": me["usage"],
    }


def test_the_plan_names_the_eval_keys_signatures_parameters_and_queue(client, seed_ids) -> None:
    from tests.support.keras_models import seed_multi_io_model

    before = _kept(client)
    response = client.post("/convert?dry_run=true", json=_spec(seed_ids))
    assert response.status_code == 200, response.text
    plan = response.json()
    assert set(plan) >= {"spec", "eval_metric_keys", "signatures", "parameters", "memory_bytes"}
    assert sorted(plan["eval_metric_keys"]) == ["acc_1", "acc_2", "global_step", "loss"]
    assert plan["parameters"] == seed_multi_io_model().count_params()
    (serving,) = plan["signatures"]
    assert serving["name"] == "serving_default"
    assert serving["method"] == "predict"
    assert serving["inputs"] == [
        {"name": "input_a", "dtype": "float32", "shape": [None, 16]},
        {"name": "input_b", "dtype": "float32", "shape": [None, 16]},
    ]
    assert [o["name"] for o in serving["outputs"]] == ["dense_2", "dense_3"]
    # Every default filled in: the RunConfig's included.
    assert plan["spec"]["train"]["batch_size"] == 32
    assert plan["spec"]["config"]["save_checkpoints_secs"] == 600
    assert plan["spec"]["deterministic"] is False
    memory = plan["memory"]
    parts = ("tensorflow_bytes", "variables_bytes", "batches_bytes", "data_bytes")
    assert plan["memory_bytes"] == sum(memory[p] for p in parts)
    assert "parameters" in memory["explanation"]
    # The seed model is compiled with RMSprop: one slot per weight, besides three copies.
    assert memory["variables_bytes"] == plan["parameters"] * 4 * (3 + 1)
    assert plan["queue"]["name"] == "cpu"
    assert plan["queue"]["priority"] == "normal"
    assert plan["queue"]["place"]["position"] >= 1
    assert _kept(client) == before


def test_a_refused_spec_is_refused_by_the_dry_run_too(client, seed_ids) -> None:
    spec = _spec(seed_ids, metric_names_map={"dense_2_categorical_accuracy": "acc_1"})
    dry = client.post("/convert?dry_run=true", json=spec)
    real = client.post("/convert", json=spec)
    assert dry.status_code == real.status_code == 422
    assert dry.json()["errors"] == real.json()["errors"]


def test_heads_plan_the_parsing_signatures_and_their_raw_alternative(client, seed_ids) -> None:
    spec = _spec(seed_ids, export_outputs={"dense_2": "classification", "dense_3": "predict"})
    plan = client.post("/convert?dry_run=true", json=spec).json()
    by_name = {s["name"]: s for s in plan["signatures"]}
    assert set(by_name) == {
        "serving_default",
        "dense_2",
        "dense_3",
        "raw:serving_default",
        "raw:dense_3",
    }
    assert by_name["serving_default"]["inputs"] == [
        {"name": "examples", "dtype": "string", "shape": [None]}
    ]
    assert by_name["dense_2"]["method"] == "classify"
    assert [o["name"] for o in by_name["dense_2"]["outputs"]] == ["scores"]
    assert [o["name"] for o in by_name["dense_3"]["outputs"]] == ["output"]
    assert [i["name"] for i in by_name["raw:dense_3"]["inputs"]] == ["input_a", "input_b"]


def test_a_one_shot_multipart_dry_run_keeps_no_upload(client, seed_files, settings) -> None:
    before = _kept(client)
    files_before = sorted(p.name for p in settings.data_dir.rglob("*") if p.is_file())
    spec = {"metric_names_map": SEED_MAP, "train": {"max_steps": 5}, "export": False}
    response = client.post(
        "/convert",
        params={"dry_run": "true"},
        data={"spec": json.dumps(spec)},
        files={"model": ("m.h5", seed_files["model"]), "train_data": ("t.npz", seed_files["data"])},
    )
    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["signatures"] == []
    assert plan["eval_metric_keys"] == []
    assert plan["memory"]["data_bytes"] > 0
    assert _kept(client) == before
    files_after = sorted(p.name for p in settings.data_dir.rglob("*") if p.is_file())
    assert files_after == files_before


def test_dry_runs_hold_no_job_slot_and_answer_the_quota_as_a_submission(client, seed_files) -> None:
    created = client.post("/tenants", json={"name": "dryrun", "quotas": {"max_active_jobs": 1}})
    assert created.status_code == 201, created.text
    key = client.post("/tenants/dryrun/keys", json={"name": "k", "role": "member"}).json()["key"]
    member = {"Authorization": f"Bearer {key}"}
    ids = {}
    for kind, path, name in (("model", "/models", "m.h5"), ("data", "/datasets", "d.npz")):
        response = client.post(path, files={"file": (name, seed_files[kind])}, headers=member)
        assert response.status_code == 201, response.text
        ids[kind] = response.json()["id"]
    for _ in range(3):
        dry = client.post("/convert?dry_run=true", json=_spec(ids), headers=member)
        assert dry.status_code == 200, dry.text
    # The quota's one job slot is still free: the dry runs held none.
    assert client.post("/convert", json=_spec(ids), headers=member).status_code == 202
    assert client.post("/convert?dry_run=true", json=_spec(ids), headers=member).status_code == 429


def test_dense_features_give_their_columns_width() -> None:
    from k2e.vetting.model_config import parse_model_config
    from tests.support.keras_models import identity_columns_model

    model = identity_columns_model()
    summary = parse_model_config(json.loads(model.to_json()))
    # Indicator columns of identity columns of 4, 2 and 4 buckets: 10 values, then Dense(1).
    assert [o.shape for o in summary.outputs] == [list(model.output_shape)]
