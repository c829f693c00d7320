"""Job.provenance as submission records it, and POST /jobs/{id}/rerun: the same inputs
again, refused when one is gone (422) or changed (409)."""

import pytest

from tests.support.uploads import upload


@pytest.fixture
def ids(client, seed_files) -> dict[str, str]:
    model = upload(client, "/models", "seed.h5", seed_files["model"])
    data = upload(client, "/datasets", "seed.npz", seed_files["data"])
    return {"model": model["id"], "data": data["id"], "model_sha": model["sha256"]}


def _spec(ids: dict[str, str], **overrides) -> dict:
    spec = {
        "keras_model_path": ids["model"],
        "train": {"dataset": ids["data"], "max_steps": 10},
        "export": False,
    }
    spec.update(overrides)
    return spec


def _submit(client, spec: dict) -> dict:
    response = client.post("/convert", json=spec)
    assert response.status_code == 202, response.text
    return response.json()


def test_submission_records_digests_and_chooses_the_seeds_left_unset(client, ids) -> None:
    job = _submit(client, _spec(ids))
    provenance = job["provenance"]
    assert provenance["model_sha256"] == ids["model_sha"]
    data_sha = client.get(f"/datasets/{ids['data']}").json()["sha256"]
    assert provenance["datasets"] == {ids["data"]: data_sha}
    assert isinstance(provenance["seeds"]["tf_random_seed"], int)
    assert isinstance(provenance["seeds"]["shuffle_seed"], int)
    assert provenance["deterministic"] is False
    assert job["spec"].get("config") is None, "the spec stays as submitted"
    given = _submit(
        client,
        _spec(
            ids,
            config={"tf_random_seed": 5},
            train={"dataset": ids["data"], "max_steps": 3, "shuffle_seed": 6},
        ),
    )
    assert given["provenance"]["seeds"] == {"tf_random_seed": 5, "shuffle_seed": 6}


def test_a_rerun_submits_the_same_inputs_with_the_recorded_seeds(client, ids) -> None:
    job = _submit(client, _spec(ids, deterministic=True))
    response = client.post(f"/jobs/{job['id']}/rerun")
    assert response.status_code == 202, response.text
    again = response.json()
    assert response.headers["location"] == f"/jobs/{again['id']}"
    assert again["id"] != job["id"]
    assert again["status"] == "queued"
    seeds = job["provenance"]["seeds"]
    assert again["spec"]["config"]["tf_random_seed"] == seeds["tf_random_seed"]
    assert again["spec"]["train"]["shuffle_seed"] == seeds["shuffle_seed"]
    assert again["spec"]["deterministic"] is True
    assert again["provenance"]["seeds"] == seeds
    assert again["provenance"]["datasets"] == job["provenance"]["datasets"]
    assert again["provenance"]["model_sha256"] == job["provenance"]["model_sha256"]


def test_a_rerun_whose_dataset_changed_is_409_naming_the_digests(client, ids, settings) -> None:
    job = _submit(client, _spec(ids))
    (path,) = settings.data_dir.rglob(f"datasets/{ids['data']}/data.npz")
    path.write_bytes(path.read_bytes() + b"\0")
    response = client.post(f"/jobs/{job['id']}/rerun")
    assert response.status_code == 409, response.text
    assert ids["data"] in response.json()["detail"]
    assert job["provenance"]["datasets"][ids["data"]] in response.json()["detail"]


def test_a_rerun_whose_dataset_is_gone_is_422_on_its_field(client, ids) -> None:
    job = _submit(client, _spec(ids))
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 202
    assert client.delete(f"/datasets/{ids['data']}").status_code == 204
    response = client.post(f"/jobs/{job['id']}/rerun")
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][-2:] == ["train", "dataset"]


def test_another_tenants_job_is_not_found_for_a_rerun(client) -> None:
    response = client.post("/jobs/00000000-0000-0000-0000-000000000000/rerun")
    assert response.status_code == 404


def test_a_deterministic_cluster_job_is_refused_at_the_field(client, ids) -> None:
    spec = _spec(ids, deterministic=True, distribution={"workers": 2, "parameter_servers": 1})
    response = client.post("/convert", json=spec)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][-1] == "deterministic"
