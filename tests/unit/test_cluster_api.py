"""Cluster jobs (``distribution``) through the real API, without a worker: the rules a
submission is refused by (each a 422 naming its field), and ``Job.cluster`` from the
members' rows (written here as the scheduler writes them, k2e.jobs.gangs.place)."""

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from k2e.client import Client, ProblemError
from k2e.cluster_schemas import Distribution
from k2e.db import utcnow
from k2e.jobs.gangs import GangStore, place
from k2e.jobs.workers import WorkerEntry, WorkerRegistry
from k2e.settings import Settings
from k2e.tables import job_members, workers
from service.main import create_app
from tests.support.api_keys import ADMIN, admin_client, bearer

PROBLEM = "application/problem+json"
CLUSTER = {"workers": 2, "parameter_servers": 1}


@pytest.fixture
def api(tmp_path: Path, redis_server) -> Iterator[TestClient]:  # noqa: ANN001
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_server.url)
    with admin_client(create_app(settings)) as client:
        yield client


def _engine(api: TestClient) -> Engine:
    return api.app.state.backend.store.engine  # type: ignore[attr-defined,no-any-return]


def _live_worker(api: TestClient, slots: int, queue: str = "cpu") -> None:
    entry = WorkerEntry(f"test-host:{uuid.uuid4().hex[:6]}", "test-host", (queue,), slots, "1")
    WorkerRegistry(_engine(api)).register(entry)


@pytest.fixture
def tenant(api: TestClient, seed_files: dict[str, bytes]):  # noqa: ANN201
    """A new tenant (with ``quotas``), its member key and its uploads."""

    def make(**quotas: object) -> dict[str, str]:
        name = f"c-{uuid.uuid4().hex[:8]}"
        body: dict[str, object] = {"name": name, **({"quotas": quotas} if quotas else {})}
        assert api.post("/tenants", json=body, headers=ADMIN).status_code == 201
        key = api.post(f"/tenants/{name}/keys", json={"name": "m"}, headers=ADMIN).json()["key"]
        found = {"name": name, "key": key}
        for field, path, file in (("model", "/models", "m.h5"), ("data", "/datasets", "d.npz")):
            response = api.post(
                path, files={"file": (file, seed_files[field])}, headers=bearer(key)
            )
            assert response.status_code == 201, response.text
            found[field] = response.json()["id"]
        return found

    return make


def _submit(api: TestClient, who: dict[str, str], distribution: object, **extra: object):  # noqa: ANN202
    spec = {
        "keras_model_path": who["model"],
        "train": {"dataset": who["data"], "max_steps": 5},
        "distribution": distribution,
        **extra,
    }
    return api.post("/convert", json=spec, headers=bearer(who["key"]))


def _refused(response, loc: list[str]) -> str:  # noqa: ANN001
    """The message of a 422 problem whose first error names ``loc``."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    error = body["errors"][0]
    assert error["loc"] == loc, body
    assert body["detail"] == error["msg"]
    return str(error["msg"])


def test_only_between_graph_is_accepted_and_the_refused_strategies_say_why(
    api: TestClient, tenant
) -> None:  # noqa: ANN001
    who = tenant()
    _live_worker(api, 4)
    loc = ["distribution", "strategy"]
    ps = _refused(_submit(api, who, {**CLUSTER, "strategy": "parameter_server_strategy"}), loc)
    assert "one step past max_steps" in ps
    assert "model.ckpt-401" in ps
    assert "accepted: `between_graph`" in ps
    mirrored = _refused(_submit(api, who, {**CLUSTER, "strategy": "multi_worker_mirrored"}), loc)
    assert "before any other TensorFlow op" in mirrored
    unknown = _refused(_submit(api, who, {**CLUSTER, "strategy": "horovod"}), loc)
    assert unknown == "strategy 'horovod' is not one k2e knows; accepted: `between_graph`"
    accepted = _submit(api, who, {**CLUSTER, "strategy": "between_graph"})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["spec"]["distribution"] == {
        "workers": 2,
        "parameter_servers": 1,
        "evaluator": False,
        "strategy": "between_graph",
    }


def test_between_graph_needs_a_parameter_server(api: TestClient, tenant) -> None:  # noqa: ANN001
    who = tenant()
    _live_worker(api, 4)
    msg = _refused(
        _submit(api, who, {"workers": 3, "parameter_servers": 0}),
        ["distribution", "parameter_servers"],
    )
    assert "needs parameter_servers >= 1" in msg
    assert "each worker would train its own copy" in msg


def test_a_cluster_needs_train_and_no_train_distribute(api: TestClient, tenant) -> None:  # noqa: ANN001
    who = tenant()
    _live_worker(api, 4)
    no_train = api.post(
        "/convert",
        json={"keras_model_path": who["model"], "distribution": CLUSTER},
        headers=bearer(who["key"]),
    )
    assert "a cluster needs `train`" in _refused(no_train, ["distribution"])
    mirrored = _submit(api, who, CLUSTER, config={"train_distribute": "mirrored"})
    msg = _refused(mirrored, ["config", "train_distribute"])
    assert "must be unset on a cluster job" in msg
    # Without a cluster, train_distribute stays what it was.
    single = _submit(api, who, None, config={"train_distribute": "mirrored"})
    assert single.status_code == 202, single.text


def test_a_cluster_larger_than_the_queues_live_slots_is_refused(api: TestClient, tenant) -> None:  # noqa: ANN001
    who = tenant()
    shape = {**CLUSTER, "evaluator": True}  # 4 slots
    none_live = _refused(_submit(api, who, shape), ["distribution"])
    assert "needs 4 worker slots at once" in none_live
    assert "the live workers of queue 'cpu' have 0" in none_live
    _live_worker(api, 2)
    _live_worker(api, 1, queue="gpu")  # another queue's slots do not count
    short = _refused(_submit(api, who, shape), ["distribution"])
    assert "the live workers of queue 'cpu' have 2" in short
    gpu = _refused(_submit(api, who, shape, accelerator="gpu"), ["distribution"])
    assert "queue 'gpu' have 1" in gpu
    _live_worker(api, 2)
    fits = _submit(api, who, shape)
    assert fits.status_code == 202, fits.text
    # A worker silent for three heartbeats counts none.
    stale = utcnow() - timedelta(minutes=5)
    with _engine(api).begin() as conn:
        conn.execute(update(workers).values(seen_at=stale))
    assert "have 0" in _refused(_submit(api, who, shape), ["distribution"])


def test_a_cluster_above_the_tenants_share_is_refused_unless_it_may_borrow(
    api: TestClient, tenant
) -> None:  # noqa: ANN001
    _live_worker(api, 8)
    capped = tenant(share={"cpu": 2}, borrow=False)
    msg = _refused(_submit(api, capped, CLUSTER), ["distribution"])
    assert "needs 3 worker slots at once" in msg
    assert "the tenant's share of queue 'cpu' is 2 slots" in msg
    assert "may not borrow" in msg
    within = _submit(api, capped, {"workers": 1, "parameter_servers": 1})
    assert within.status_code == 202, within.text
    borrowing = tenant(share={"cpu": 2}, borrow=True)
    assert _submit(api, borrowing, CLUSTER).status_code == 202


def test_the_job_shows_its_clusters_members(api: TestClient, tenant) -> None:  # noqa: ANN001
    who = tenant()
    _live_worker(api, 4)
    job = _submit(api, who, CLUSTER).json()
    # The live worker's slots are free: the submission's scheduling pass placed the gang.
    assert job["cluster"]["gang"] == 1
    assert {m["state"] for m in job["cluster"]["members"]} == {"placed"}
    single = _submit(api, who, None).json()
    engine = _engine(api)
    gang = 1
    gangs = GangStore(engine)
    assert gangs.join(job["id"], gang, "chief", 0, "host-a:1", "host-a", "host-a:4001")
    assert gangs.join(job["id"], gang, "ps", 0, "host-b:2", "host-b", "host-b:4002")
    # The parameter server went silent past its lease: shown lost.
    with engine.begin() as conn:
        conn.execute(
            update(job_members)
            .where(job_members.c.role == "ps")
            .values(beat_at=utcnow() - timedelta(minutes=5))
        )
    expected = [
        ("chief", 0, "ready", "host-a", "host-a:4001"),
        ("worker", 0, "placed", None, None),
        ("ps", 0, "lost", "host-b", "host-b:4002"),
    ]

    def members(body: dict) -> list[tuple]:
        return [
            (m["role"], m["index"], m["state"], m["node"], m["address"])
            for m in body["cluster"]["members"]
        ]

    shown = api.get(f"/jobs/{job['id']}", headers=bearer(who["key"])).json()
    assert shown["cluster"]["gang"] == gang == 1
    assert members(shown) == expected
    listed = {j["id"]: j for j in api.get("/jobs", headers=bearer(who["key"])).json()["items"]}
    assert members(listed[job["id"]]) == expected
    assert listed[single["id"]]["cluster"] is None
    assert api.get(f"/jobs/{single['id']}").json()["cluster"] is None


def test_the_client_submits_a_clusters_shape_and_reads_its_refusal(api: TestClient, tenant) -> None:  # noqa: ANN001
    who = tenant()
    _live_worker(api, 3)
    spec = {"keras_model_path": who["model"], "train": {"dataset": who["data"], "max_steps": 5}}
    with Client("http://testserver", who["key"], http=TestClient(api.app)) as client:
        job = client.submit(spec, distribution=Distribution(workers=2, parameter_servers=1))
        assert job.spec["distribution"]["workers"] == 2
        placed = client.get_job(job.id).cluster
        assert placed is not None
        assert [(m.role, m.index, m.state) for m in placed.members] == [
            ("chief", 0, "placed"),
            ("worker", 0, "placed"),
            ("ps", 0, "placed"),
        ]
        with pytest.raises(ProblemError) as refused:
            client.submit(spec, distribution={"workers": 3, "parameter_servers": 1})
    assert refused.value.status == 422
    assert refused.value.errors[0].field == "distribution"
    assert "needs 4 worker slots at once" in refused.value.errors[0].msg


def test_the_end_event_of_a_cluster_job_carries_its_members(api: TestClient, tenant) -> None:  # noqa: ANN001
    who = tenant()
    _live_worker(api, 3)
    job = _submit(api, who, CLUSTER).json()
    assert api.post(f"/jobs/{job['id']}/cancel", headers=bearer(who["key"])).status_code == 202
    engine = _engine(api)
    with engine.begin() as conn:
        place(conn, job["id"], Distribution.model_validate(CLUSTER))
    stream = api.get(f"/jobs/{job['id']}/events", headers=bearer(who["key"]))
    assert stream.status_code == 200
    blocks = [b for b in stream.text.split("\n\n") if "event: end" in b]
    assert len(blocks) == 1, stream.text
    data = next(line for line in blocks[0].splitlines() if line.startswith("data: "))
    ended = json.loads(data[len("data: ") :])
    assert ended["status"] == "cancelled"
    roles = [(m["role"], m["state"]) for m in ended["cluster"]["members"]]
    assert roles == [("chief", "placed"), ("worker", "placed"), ("ps", "placed")]
