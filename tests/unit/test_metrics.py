"""GET /metrics through the real API: who may read it, request counts by route template,
job counts and tallies that match the store, and series that stay bounded however many
jobs and tenants the store holds."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.schemas import JobError, JobStatus
from k2e.settings import Settings
from k2e.tenancy.scope import ANY_TENANT
from service.main import create_app
from tests.support.api_keys import ADMIN, bearer, new_tenant

TOKEN = "metrics-token-for-the-suite-0123"
# The bound docs/operations.md ("Metrics") gives for the store's series: 12 + 106 per
# queue + 2 per tenant label; here 2 queues and 20 tenant labels.
SERIES_BOUND = 12 + 106 * 2 + 2 * 20


@pytest.fixture
def api(tmp_path: Path, redis_server) -> Iterator[TestClient]:  # noqa: ANN001
    settings = Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_server.url,
        metrics_token=TOKEN,
        metrics_tenant_labels=20,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def samples(client: TestClient, headers: dict[str, str] = ADMIN) -> dict[tuple, float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            found[s.name, tuple(sorted(s.labels.items()))] = s.value
    return found


def value(found: dict[tuple, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def new_job(store: JobLeases, tenant: str, queue: str = "cpu") -> str:
    job_id = uuid.uuid4().hex
    store.create(NewJob(job_id, tenant, {}, queue, f"jobs/{job_id}", 10))
    return job_id


def test_metrics_answer_an_admin_key_or_the_token_and_401_otherwise(api: TestClient) -> None:
    member = new_tenant(api, f"m-{uuid.uuid4().hex[:6]}")
    for headers in ({}, bearer(member), bearer("not-the-token-0123456789"), bearer(TOKEN + "x")):
        response = api.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "K2E_METRICS_TOKEN" in response.json()["detail"]
    assert value(samples(api, ADMIN), "k2e_dependency_up", dependency="store") == 1
    assert value(samples(api, bearer(TOKEN)), "k2e_dependency_up", dependency="broker") == 1


def test_requests_are_counted_by_route_template_and_status(api: TestClient) -> None:
    store = JobLeases(api.app.state.backend.settings.sqlalchemy_url)
    done = new_job(store, "default")
    assert store.start(done, "w:1", 60) is not None
    store.finish(done, JobStatus.succeeded, "w:1")
    before = samples(api)
    for _ in range(3):
        assert api.get("/healthz").status_code == 200
    # The second read is answered from memory (service/fastpath.py), before the routes.
    for _ in range(2):
        assert api.get(f"/jobs/{done}", headers=ADMIN).status_code == 200
    unknown = uuid.uuid4().hex
    assert api.get(f"/jobs/{unknown}", headers=ADMIN).status_code == 404
    assert api.get(f"/no/such/{unknown}").status_code == 404
    after = samples(api)
    requests = "k2e_http_requests_total"

    def grew(**labels: str) -> float:
        return value(after, requests, **labels) - value(before, requests, **labels)

    assert grew(method="GET", route="/healthz", status="200") == 3
    assert grew(method="GET", route="/jobs/{job_id}", status="404") == 1
    assert grew(method="GET", route="/jobs/{job_id}", status="200") == 2
    assert grew(method="GET", route="unmatched", status="404") == 1
    assert not any(unknown in str(key) or done in str(key) for key in after)
    count = "k2e_http_request_duration_seconds_count"
    assert value(after, count, method="GET", route="/healthz") >= 3


def test_job_figures_and_tallies_match_the_store(api: TestClient) -> None:
    store: JobLeases = JobLeases(api.app.state.backend.settings.sqlalchemy_url)
    ids = [new_job(store, "default") for _ in range(5)]
    gpu = new_job(store, "default", "gpu")
    assert store.start(ids[0], "w:1", 60) is not None
    assert store.start(ids[1], "w:1", 60) is not None
    store.finish(ids[1], JobStatus.succeeded, "w:1")
    assert store.start(ids[2], "w:1", 60) is not None
    oom = JobError(type="OutOfMemory", message="too big", reason="out_of_memory")
    store.finish(ids[2], JobStatus.failed, "w:1", error=oom)
    store.request_cancel(ids[3], ANY_TENANT)
    found = samples(api)
    assert value(found, "k2e_jobs", queue="cpu", status="queued") == 1
    assert value(found, "k2e_jobs", queue="cpu", status="running") == 1
    assert value(found, "k2e_jobs", queue="gpu", status="queued") == 1
    assert value(found, "k2e_jobs_submitted_total", queue="cpu") == 5
    ended = "k2e_jobs_ended_total"
    assert value(found, ended, queue="cpu", status="succeeded", reason="") == 1
    assert value(found, ended, queue="cpu", status="failed", reason="out_of_memory") == 1
    assert value(found, ended, queue="cpu", status="cancelled", reason="") == 1
    assert value(found, "k2e_memory_watchdog_interventions_total", queue="cpu") == 1
    assert value(found, "k2e_job_queue_wait_seconds_count", queue="cpu") == 3
    assert value(found, "k2e_job_run_seconds_count", queue="cpu", status="succeeded") == 1
    assert value(found, "k2e_queue_waiting_jobs", queue="gpu") == 1
    assert value(found, "k2e_queue_oldest_waiting_seconds", queue="gpu") >= 0
    assert ("k2e_queue_oldest_waiting_seconds", (("queue", "gpu"),)) in found
    assert value(found, "k2e_tenant_active_jobs", tenant="default") == 3
    # Deleting an ended job takes its row, not its count: counters only grow.
    store.delete_finished(ids[1], ANY_TENANT)
    again = samples(api)
    assert value(again, ended, queue="cpu", status="succeeded", reason="") == 1
    assert value(again, "k2e_jobs", queue="cpu", status="succeeded") == 0
    del gpu


def test_series_stay_bounded_with_1000_jobs_from_50_tenants(api: TestClient) -> None:
    store = JobLeases(api.app.state.backend.settings.sqlalchemy_url)

    def add_jobs(prefix: str) -> None:
        statuses = (JobStatus.succeeded, JobStatus.failed, None, None)
        for i in range(1000):
            job_id = new_job(store, f"{prefix}{i % 50:02d}", ("cpu", "gpu")[i % 2])
            status = statuses[i % 4]
            if i % 4 == 2 or status is not None:
                assert store.start(job_id, f"w:{i}", 60) is not None
            if status is not None:
                store.finish(job_id, status, f"w:{i}")

    add_jobs("alpha")
    first = samples(api)
    add_jobs("beta")
    second = samples(api)
    series = {key for key in second if not key[0].startswith("k2e_http_")}
    assert len(series) <= SERIES_BOUND
    assert len([key for key in first if not key[0].startswith("k2e_http_")]) == len(series)
    tenants = {
        dict(labels)["tenant"] for name, labels in second if name == "k2e_tenant_active_jobs"
    }
    assert len(tenants) == 21
    assert "other" in tenants
    assert value(second, "k2e_jobs_submitted_total", queue="cpu") == 1000


def test_a_dependency_that_does_not_answer_is_a_zero_not_a_failed_scrape(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        found = samples(client)
    assert value(found, "k2e_dependency_up", dependency="broker") == 0
    assert value(found, "k2e_dependency_up", dependency="store") == 1
    assert value(found, "k2e_dependency_up", dependency="storage") == 1
    assert ("k2e_jobs_submitted_total", (("queue", "cpu"),)) not in found  # none yet
    assert value(found, "k2e_queue_slots", queue="cpu") == 0
