"""The API without a worker: problems, documented rules, uploads, readiness."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from k2e.launcher.embedded_redis import free_port
from k2e.settings import Settings
from service.main import create_app
from tests.support.api_keys import admin_client, admin_files

PROBLEM = "application/problem+json"

# The library's own wording (tensorflow-estimator 2.15.0, model_to_estimator), written out:
# the expected text must not come from the code under test. "specity" is its spelling.
NEITHER_MODEL = "Either `keras_model` or `keras_model_path` needs to be provided."
BOTH_MODELS = "Please specity either `keras_model` or `keras_model_path`, but not both."
CHECKPOINT_FORMAT_FOO = 'Checkpoint format must be one of "checkpoint" or "saver". Got foo'
# k2e's own refusal (the library would download from GCS).
GCS_PATH = (
    "`keras_model_path` is a GCS URI; model_to_estimator does not support loading models from GCS."
)


@pytest.fixture
def client(tmp_path, redis_server) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, redis_url=redis_server.url, max_upload_bytes=4096)
    with admin_client(create_app(settings)) as test_client:
        yield test_client


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "errors"} <= set(body)
    return body


def _spec(**overrides) -> dict:
    spec = {"keras_model_path": "a" * 32, "train": {"dataset": "b" * 32, "max_steps": 10}}
    spec.update(overrides)
    return {k: v for k, v in spec.items() if v is not None}


def _jobs(client) -> list:
    return client.get("/jobs").json()["items"]


def test_healthz_and_readyz(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "job_store": "ok",
        "broker": "ok",
        "storage": "ok",
        "inspection_sandbox": "ok",
    }


def test_readyz_is_503_when_the_broker_is_down(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with admin_client(create_app(settings)) as client:
        body = _problem(client.get("/readyz"), 503)
        assert "broker" in body["detail"]


def test_unknown_ids_are_404_problems(client) -> None:
    for path, detail in (
        ("/jobs/nope", "no job with id 'nope'"),
        ("/models/" + "0" * 32, f"no model with id '{'0' * 32}'"),
        ("/datasets/xyz", "no dataset with id 'xyz'"),
        ("/jobs/nope/savedmodel", "no job with id 'nope'"),
    ):
        assert detail in _problem(client.get(path), 404)["detail"], path
    assert "no job with id 'nope'" in _problem(client.post("/jobs/nope/cancel"), 404)["detail"]


@pytest.mark.parametrize(
    ("spec", "loc", "detail"),
    [
        (_spec(keras_model_path=None), [], NEITHER_MODEL),
        (_spec(keras_model={"config": {}}), [], BOTH_MODELS),
        (_spec(keras_model_path="gs://bucket/m.h5"), ["keras_model_path"], GCS_PATH),
        (
            _spec(keras_model_path="https://storage.googleapis.com/b/m.h5"),
            ["keras_model_path"],
            GCS_PATH,
        ),
        (_spec(checkpoint_format="foo"), ["checkpoint_format"], CHECKPOINT_FORMAT_FOO),
    ],
)
def test_documented_rules_answer_422_with_the_library_wording(client, spec, loc, detail) -> None:
    body = _problem(client.post("/convert", json=spec), 422)
    assert body["detail"] == detail
    assert body["errors"][0]["loc"][: len(loc)] == loc
    assert _jobs(client) == []


def test_unknown_fields_and_bad_ranges_name_the_field(client) -> None:
    body = _problem(client.post("/convert", json=_spec(bogus=1)), 422)
    assert body["errors"][0]["loc"] == ["bogus"]
    assert "Extra inputs are not permitted" in body["errors"][0]["msg"]
    body = _problem(
        client.post("/convert", json=_spec(train={"dataset": "x", "max_steps": 0})), 422
    )
    assert body["errors"][0]["loc"] == ["train", "max_steps"]
    assert "greater than or equal to 1" in body["errors"][0]["msg"]
    assert "greater than or equal to 1" in body["detail"]
    assert _jobs(client) == []


def test_non_json_body_is_a_problem(client) -> None:
    body = _problem(
        client.post("/convert", content=b"{not json", headers={"content-type": "application/json"}),
        422,
    )
    assert "not valid JSON" in body["detail"]


def test_unknown_model_id_is_422_on_its_field(client) -> None:
    body = _problem(client.post("/convert", json=_spec()), 422)
    assert body["errors"][0]["loc"] == ["keras_model_path"]
    assert f"no model with id '{'a' * 32}'" in body["detail"]
    assert _jobs(client) == []


def _kept(tmp_path, kind: str) -> list:
    """What the storage holds of ``kind`` (models, datasets): a refused upload adds nothing."""
    folder = admin_files(tmp_path / "storage") / kind
    assert folder.is_dir(), f"the storage layout changed: no {folder}"
    return sorted(folder.iterdir())


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("m.h5", b"\x00garbage" * 10, "not an HDF5 file"),
        ("m.h5", b"\x89HDF\r\n\x1a\n" + b"junk" * 50, "corrupt or truncated HDF5 file"),
        ("m.txt", b"hello", "expected a file ending in one of ['.h5', '.hdf5', '.keras']"),
        ("m.h5", b"", "empty"),
    ],
    ids=["garbage", "hdf5-magic-then-junk", "wrong-extension", "empty"],
)
def test_bad_model_uploads_are_422_naming_the_problem(
    client, tmp_path, name, content, reason
) -> None:
    response = client.post("/models", files={"file": (name, content)})
    body = _problem(response, 422)
    assert reason in body["detail"], body["detail"]
    assert _kept(tmp_path, "models") == []
    assert client.get("/healthz").status_code == 200


def test_uploads_over_the_limit_are_413(client, tmp_path) -> None:
    response = client.post("/models", files={"file": ("m.h5", b"x" * 10_000)})
    body = _problem(response, 413)
    assert "exceeds the upload limit of 4096 bytes" in body["detail"], body["detail"]
    assert _kept(tmp_path, "models") == []


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("d.npz", b"PK\x03\x04junk", "not an .npz (zip) file"),
        ("d.parquet", b"PAR1", "expected a file ending in one of ['.csv', '.npz'"),
    ],
    ids=["broken-npz", "wrong-extension"],
)
def test_bad_dataset_uploads_are_422_naming_the_problem(
    client, tmp_path, name, content, reason
) -> None:
    body = _problem(client.post("/datasets", files={"file": (name, content)}), 422)
    assert reason in body["detail"], body["detail"]
    assert _kept(tmp_path, "datasets") == []


def test_custom_objects_lists_relu6(client) -> None:
    names = [o["name"] for o in client.get("/custom-objects").json()]
    assert "relu6" in names
