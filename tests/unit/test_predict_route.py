"""POST /jobs/{id}/predict without a worker: the limits and the answers when no worker
(504) or no broker (503) answers. tests/integration/test_predict.py runs it on a worker."""

import socket
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from k2e.jobs.job_store import NewJob
from k2e.settings import Settings
from k2e.tenancy.bodies import DEFAULT_TENANT
from service.main import create_app
from tests.support.api_keys import admin_client, bearer, new_tenant


def _client(settings: Settings) -> TestClient:
    return admin_client(create_app(settings))


def _job_with_export(client: TestClient, exported: bool = True) -> str:
    """A job record whose model_dir holds an export folder (no worker ever ran it)."""
    backend = client.app.state.backend  # type: ignore[attr-defined]
    job_id = str(uuid.uuid4())
    storage = backend.storage.for_tenant(DEFAULT_TENANT)
    model_dir = storage.job_model_dir(job_id)
    if exported:
        (model_dir / "export" / "1").mkdir(parents=True)
    backend.store.create(
        NewJob(job_id, DEFAULT_TENANT, {}, "cpu", storage.relative(model_dir), None)
    )
    return job_id


@pytest.fixture
def client(tmp_path, redis_server) -> Iterator[TestClient]:
    # The unit tests' Redis: no worker consumes it, so a prediction task is never answered.
    settings = Settings(
        data_dir=tmp_path, redis_url=redis_server.url, predict_timeout_s=1, predict_max_instances=4
    )
    with _client(settings) as test_client:
        yield test_client


INSTANCE = {"input_a": [0.0] * 16, "input_b": [0.0] * 16}


def test_no_worker_answers_504_within_the_timeout(client) -> None:
    job_id = _job_with_export(client)
    response = client.post(f"/jobs/{job_id}/predict", json={"instances": [INSTANCE]})
    assert response.status_code == 504, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "K2E_PREDICT_TIMEOUT_S" in response.json()["detail"]


def test_limits_and_refusals_before_any_task(client) -> None:
    job_id = _job_with_export(client)
    too_many = client.post(f"/jobs/{job_id}/predict", json={"instances": [INSTANCE] * 5})
    assert too_many.status_code == 422, too_many.text
    assert too_many.json()["errors"][0]["loc"] == ["instances"]
    assert "K2E_PREDICT_MAX_INSTANCES" in too_many.json()["detail"]
    empty = client.post(f"/jobs/{job_id}/predict", json={"instances": []})
    assert empty.status_code == 422
    assert empty.json()["errors"][0]["loc"] == ["instances"]
    unknown_field = client.post(f"/jobs/{job_id}/predict", json={"instances": [1], "x": 1})
    assert unknown_field.status_code == 422
    big = {"instances": [{"input_a": [0.0] * 300_000}]}
    assert client.post(f"/jobs/{job_id}/predict", json=big).status_code == 413
    not_exported = _job_with_export(client, exported=False)
    conflict = client.post(f"/jobs/{not_exported}/predict", json={"instances": [INSTANCE]})
    assert conflict.status_code == 409, conflict.text
    other = bearer(new_tenant(client, "predict-other"))
    hidden = client.post(f"/jobs/{job_id}/predict", json={"instances": [INSTANCE]}, headers=other)
    unknown = client.post(f"/jobs/{uuid.uuid4()}/predict", json={"instances": [INSTANCE]})
    assert hidden.status_code == 404
    assert unknown.status_code == 404


def test_no_broker_answers_503(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{port}/0")
    with _client(settings) as client:
        job_id = _job_with_export(client)
        response = client.post(f"/jobs/{job_id}/predict", json={"instances": [INSTANCE]})
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
