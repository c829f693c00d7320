"""The API without a worker: problems, documented rules, uploads, readiness."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from k2e.settings import Settings
from k2e.spec import rules
from launcher.embedded_redis import free_port
from service.main import create_app
from tests.auth import admin_client

PROBLEM = "application/problem+json"


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
    assert ready.json()["checks"] == {"job_store": "ok", "broker": "ok"}


def test_readyz_is_503_when_the_broker_is_down(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with admin_client(create_app(settings)) as client:
        body = _problem(client.get("/readyz"), 503)
        assert "broker" in body["detail"]


def test_unknown_ids_are_404_problems(client) -> None:
    for path in ("/jobs/nope", "/models/" + "0" * 32, "/datasets/xyz", "/jobs/nope/savedmodel"):
        _problem(client.get(path), 404)
    _problem(client.post("/jobs/nope/cancel"), 404)


@pytest.mark.parametrize(
    ("spec", "loc", "detail"),
    [
        (_spec(keras_model_path=None), [], rules.NEITHER_MODEL),
        (_spec(keras_model={"config": {}}), [], rules.BOTH_MODELS),
        (_spec(keras_model_path="gs://bucket/m.h5"), ["keras_model_path"], rules.GCS_PATH),
        (
            _spec(keras_model_path="https://storage.googleapis.com/b/m.h5"),
            ["keras_model_path"],
            rules.GCS_PATH,
        ),
        (
            _spec(checkpoint_format="foo"),
            ["checkpoint_format"],
            'Checkpoint format must be one of "checkpoint" or "saver". Got foo',
        ),
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
    body = _problem(
        client.post("/convert", json=_spec(train={"dataset": "x", "max_steps": 0})), 422
    )
    assert body["errors"][0]["loc"] == ["train", "max_steps"]


def test_non_json_body_is_a_problem(client) -> None:
    body = _problem(
        client.post("/convert", content=b"{not json", headers={"content-type": "application/json"}),
        422,
    )
    assert "not valid JSON" in body["detail"]


def test_unknown_model_id_is_422_on_its_field(client) -> None:
    body = _problem(client.post("/convert", json=_spec()), 422)
    assert body["errors"][0]["loc"] == ["keras_model_path"]
    assert _jobs(client) == []


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("m.h5", b"\x00garbage" * 10),
        ("m.h5", b"\x89HDF\r\n\x1a\n" + b"junk" * 50),
        ("m.txt", b"hello"),
        ("m.h5", b""),
    ],
)
def test_bad_model_uploads_are_4xx(client, name, content) -> None:
    response = client.post("/models", files={"file": (name, content)})
    _problem(response, 422)
    assert client.get("/healthz").status_code == 200


def test_uploads_over_the_limit_are_413(client) -> None:
    response = client.post("/models", files={"file": ("m.h5", b"x" * 10_000)})
    body = _problem(response, 413)
    assert "limit" in body["detail"]


def test_bad_dataset_uploads_are_4xx(client) -> None:
    _problem(client.post("/datasets", files={"file": ("d.npz", b"PK\x03\x04junk")}), 422)
    _problem(client.post("/datasets", files={"file": ("d.parquet", b"PAR1")}), 422)


def test_custom_objects_lists_relu6(client) -> None:
    names = [o["name"] for o in client.get("/custom-objects").json()]
    assert "relu6" in names
