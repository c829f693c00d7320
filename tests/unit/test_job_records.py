"""A stored job as the server uses it (JobRecord) and its public body (Job); reads that
take a Scope, with no default."""

import json
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import update

from k2e.catalog import Catalog
from k2e.errors import NotFound
from k2e.jobs.dispatch import Dispatcher
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.jobs.records import JobRecord
from k2e.schemas import DatasetInfo, Job
from k2e.tables import jobs
from k2e.tenancy.bodies import EffectiveQuotas
from k2e.tenancy.scope import ANY_TENANT, Scope
from k2e.tenancy.tenant_store import TenantStore

LEGACY_ROOT = "/srv/k2e-legacy/data"


@pytest.fixture
def store(tmp_path) -> Iterator[JobLeases]:
    s = JobLeases(f"sqlite:///{tmp_path / 'jobs.db'}")
    s.create_schema()
    yield s
    s.engine.dispose()


def _create(store: JobLeases, tenant: str, **fields: object) -> str:
    job_id = str(uuid.uuid4())
    store.create(NewJob(job_id, tenant, {}, "cpu", f"jobs/{job_id}", 10, **fields))  # type: ignore[arg-type]
    return job_id


def test_a_record_keeps_the_stored_paths_and_its_body_shows_them_relative(
    store: JobLeases,
) -> None:
    job_id = _create(store, "acme")
    source = _create(store, "acme")
    # Rows older than tenancy kept absolute paths.
    model_dir = f"{LEGACY_ROOT}/jobs/{job_id}"
    checkpoint = f"{LEGACY_ROOT}/jobs/{source}/model.ckpt-5"
    with store.engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(model_dir=model_dir, warm_start_from=checkpoint)
        )
    assert store.start(job_id, "host:1:w", 30) is not None
    assert store.record_export(job_id, "host:1:w", f"{model_dir}/export/7")

    record = store.get(job_id, ANY_TENANT)
    assert isinstance(record, JobRecord)
    assert (record.model_dir, record.warm_start_from) == (model_dir, checkpoint)
    assert record.export_path == f"{model_dir}/export/7"

    job = record.public()
    assert isinstance(job, Job)
    assert job.model_dir == f"jobs/{job_id}"  # the last two parts, as before
    assert job.warm_start_from == f"{source}/model.ckpt-5"
    body = job.model_dump_json()
    assert LEGACY_ROOT not in body  # no server path in the public body
    assert set(json.loads(body)) == set(Job.model_fields)
    assert not {"export_path", "request_hash"} & set(json.loads(body))
    assert (job.id, job.status, job.tenant, job.attempts) == (
        record.id,
        record.status,
        "acme",
        1,
    )


def test_a_relative_model_dir_is_shown_as_stored(store: JobLeases) -> None:
    job_id = _create(store, "acme", warm_start_from="model_dirs/base")
    job = store.get(job_id, Scope.of("acme")).public()
    assert (job.model_dir, job.warm_start_from) == (f"jobs/{job_id}", "model_dirs/base")


def test_a_read_without_a_scope_is_refused(store: JobLeases) -> None:
    job_id = _create(store, "acme")
    with pytest.raises(TypeError):
        store.get(job_id)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        store.list_jobs()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        store.request_cancel(job_id)  # type: ignore[call-arg]
    # Neither None nor a bare tenant name stands for a scope.
    for wrong in (None, "acme"):
        with pytest.raises(TypeError):
            store.get(job_id, wrong)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            store.list_jobs(wrong)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Scope.of(None)  # type: ignore[arg-type]


def test_a_members_scope_never_sees_another_tenants_job_any_tenant_does(
    store: JobLeases,
) -> None:
    mine, theirs = _create(store, "acme"), _create(store, "globex")
    member = Scope.of("acme")
    assert store.get(mine, member).id == mine
    with pytest.raises(NotFound):
        store.get(theirs, member)
    with pytest.raises(NotFound):
        store.request_cancel(theirs, member)
    with pytest.raises(NotFound):
        store.delete_finished(theirs, member)
    assert [r.id for r in store.list_jobs(member).items] == [mine]
    assert store.get(theirs, ANY_TENANT).tenant == "globex"
    assert {r.id for r in store.list_jobs(ANY_TENANT).items} == {mine, theirs}


def test_catalog_keys_and_dispatch_take_a_scope(store: JobLeases) -> None:
    catalog = Catalog(store.engine)
    info = DatasetInfo(id=f"ds-{uuid.uuid4().hex[:8]}", format="npz", num_examples=1, arrays={})
    catalog.add("dataset", "globex", info)
    with pytest.raises(NotFound):
        catalog.info("dataset", info.id, Scope.of("acme"))
    assert catalog.info("dataset", info.id, ANY_TENANT)["id"] == info.id
    assert catalog.list("dataset", Scope.of("acme"))[0] == []
    with pytest.raises(TypeError):
        catalog.info("dataset", info.id, None)  # type: ignore[arg-type]

    quotas = EffectiveQuotas(max_active_jobs=1, max_bytes=1, max_steps=1, max_run_s=1)
    tenants = TenantStore(store.engine, quotas)
    for name in ("acme", "globex"):
        tenants.create_tenant(name)
        tenants.create_key(name, f"{name}-key", "member")
    assert {k.tenant for k in tenants.list_keys(Scope.of("acme"))} == {"acme"}
    assert {"acme", "globex"} <= {k.tenant for k in tenants.list_keys(ANY_TENANT)}
    with pytest.raises(TypeError):
        tenants.list_keys()  # type: ignore[call-arg]

    dispatcher = Dispatcher(store.engine, sender=None, inflight_per_tenant=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        dispatcher.pump()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        dispatcher.pump(None)  # type: ignore[arg-type]
