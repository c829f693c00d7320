"""POST /jobs/{id}/predict with numbers the worker cannot represent: a 422 at the API that
names the place in `instances`, never a task the worker fails on (no reply: a 504 after
K2E_PREDICT_TIMEOUT_S). No worker runs here: a refusal must come before any task."""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from k2e.jobs.job_store import NewJob
from k2e.settings import Settings
from k2e.tenancy.bodies import DEFAULT_TENANT
from service.main import create_app
from tests.support.api_keys import admin_client


def _input(name: str, shape: list[int | None], dtype: str) -> dict[str, Any]:
    config = {"batch_input_shape": shape, "dtype": dtype, "name": name}
    return {"class_name": "InputLayer", "name": name, "config": config, "inbound_nodes": []}


# An inline model's config, as a job's spec keeps it: inputs of three dtypes.
INLINE = {
    "class_name": "Functional",
    "config": {
        "name": "m",
        "layers": [
            _input("ids", [None, 2], "int32"),
            _input("x", [None, 2], "float32"),
            _input("text", [None, 1], "string"),
        ],
        "input_layers": [["ids", 0, 0], ["x", 0, 0], ["text", 0, 0]],
        "output_layers": [["x", 0, 0]],
    },
}


@pytest.fixture
def client(tmp_path, redis_server) -> Iterator[TestClient]:
    # No worker consumes this Redis: a task that is sent gets no answer (504 after 1 s).
    settings = Settings(data_dir=tmp_path, redis_url=redis_server.url, predict_timeout_s=1)
    with admin_client(create_app(settings)) as test_client:
        yield test_client


def _job(client: TestClient, spec: dict[str, Any]) -> str:
    """A job record whose model_dir holds an export folder (no worker ever ran it)."""
    backend = client.app.state.backend  # type: ignore[attr-defined]
    job_id = str(uuid.uuid4())
    storage = backend.storage.for_tenant(DEFAULT_TENANT)
    model_dir = storage.job_model_dir(job_id)
    (model_dir / "export" / "1").mkdir(parents=True)
    backend.store.create(
        NewJob(job_id, DEFAULT_TENANT, spec, "cpu", storage.relative(model_dir), None)
    )
    return job_id


def _post(client: TestClient, job_id: str, body: str):
    headers = {"content-type": "application/json"}
    return client.post(f"/jobs/{job_id}/predict", content=body, headers=headers)


ROW = '{"ids": [1, 2], "x": [0.5, 1.5], "text": ["a"]}'


@pytest.mark.parametrize(
    ("row", "loc", "words"),
    [
        # Any input: what no JSON number k2e takes can be.
        ('{"ids": [1, 2], "x": [0.5, 1e400], "text": ["a"]}', ["x", 1], "not a finite number"),
        ('{"ids": [1, ' + str(10**400) + '], "x": [0, 0], "text": ["a"]}', ["ids", 1], "int64"),
        # What the input's own dtype cannot hold.
        ('{"ids": [1, 2147483648], "x": [0, 0], "text": ["a"]}', ["ids", 1], "int32"),
        ('{"ids": [-2147483649, 0], "x": [0, 0], "text": ["a"]}', ["ids", 0], "int32"),
        ('{"ids": [1, 2], "x": [0, 1e39], "text": ["a"]}', ["x", 1], "float32"),
        ('{"ids": [1, 2], "x": [0, 0], "text": [1000000000000]}', ["text", 0], "strings"),
    ],
)
def test_numbers_the_model_cannot_take_are_422_at_their_place(client, row, loc, words) -> None:
    job_id = _job(client, {"keras_model": {"config": INLINE}})
    response = _post(client, job_id, '{"instances": [' + ROW + ", " + row + "]}")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    error = response.json()["errors"][0]
    assert error["loc"] == ["instances", 1, *loc]
    assert words in error["msg"]


def test_a_model_of_unknown_inputs_still_refuses_what_json_numbers_cannot_be(client) -> None:
    # A job whose model the API cannot describe (no spec to read it from).
    job_id = _job(client, {})
    for value, words in ((str(10**400), "int64"), ("-1e400", "not a finite number")):
        response = _post(client, job_id, '{"instances": [[0, ' + value + "]]}")
        assert response.status_code == 422, response.text
        error = response.json()["errors"][0]
        assert error["loc"] == ["instances", 0, 1]
        assert words in error["msg"]


def test_numbers_the_inputs_hold_reach_the_worker(client) -> None:
    # In range everywhere: sent on to a worker (none here, so 504), not refused.
    job_id = _job(client, {"keras_model": {"config": INLINE}})
    edge = '{"ids": [2147483647, -2147483648], "x": [3.4e38, -3.4e38], "text": ["a"]}'
    response = _post(client, job_id, '{"instances": [' + ROW + ", " + edge + "]}")
    assert response.status_code == 504, response.text


def test_the_worker_refuses_what_the_api_could_not_check() -> None:
    # A job whose inputs the API does not know sends such instances on: the worker answers
    # with a refusal (a 422 at the API) instead of raising, which left the API without a
    # reply until its timeout; and never turns a number into bytes (bytes(10**12)
    # allocates a terabyte).
    tf = pytest.importorskip("tensorflow")
    from tensorflow.core.protobuf import meta_graph_pb2

    from worker.export_predict import BadInstances, input_columns

    def signature(dtype: Any) -> Any:
        built = meta_graph_pb2.SignatureDef()
        built.inputs["x"].dtype = dtype.as_datatype_enum
        built.inputs["x"].tensor_shape.dim.add().size = -1
        return built

    with pytest.raises(BadInstances, match="not a int64 array"):
        input_columns(signature(tf.int64), [2**70])
    with pytest.raises(BadInstances, match="not a float32 array"):
        input_columns(signature(tf.float32), [10**400])
    with pytest.raises(BadInstances, match="takes strings"):
        input_columns(signature(tf.string), [10**12])
    assert input_columns(signature(tf.string), ["a"])["x"].tolist() == [b"a"]
