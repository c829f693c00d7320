"""Retention (K2E_RETENTION_DAYS, applied by the worker's reconciler): a finished job's own
model_dir is removed once it is older than the retention period; its tenant's bytes are
freed and its downloads answer 404. Named model_dirs are kept (later jobs warm-start
from them), and so are recent jobs' files."""

import os
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from k2e.db import utcnow
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.jobs.queueing import make_celery
from k2e.schemas import JobStatus
from k2e.settings import Settings
from k2e.storage import Storage, disk_usage
from k2e.tables import jobs
from service.main import create_app
from tests.support.api_keys import TEST_ADMIN_KEY, admin_client, bearer, new_tenant
from worker.reconciler import Reconciler

PROBLEM = "application/problem+json"
TENANT = "keeper"


def _finished_job(store: JobLeases, storage: Storage, size: int, name: str | None = None) -> str:
    """A succeeded job whose model_dir (its own, or the named one) holds a checkpoint and
    an export, recorded as the worker records them."""
    job_id = os.urandom(8).hex()
    model_dir = storage.named_model_dir(name) if name else storage.job_model_dir(job_id)
    lock = f"{TENANT}:{name}" if name else None
    store.create(NewJob(job_id, TENANT, {}, "cpu", storage.relative(model_dir), 1, dir_lock=lock))
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.ckpt-1.index").write_bytes(os.urandom(64))
    (model_dir / "model.ckpt-1.data-00000-of-00001").write_bytes(os.urandom(size))
    export = model_dir / "export" / "1700000000"
    export.mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(os.urandom(size))
    assert store.start(job_id, "w", 30) is not None
    assert store.record_export(job_id, "w", storage.relative(export))
    store.finish(job_id, JobStatus.succeeded, "w", disk_bytes=disk_usage(model_dir))
    return job_id


def test_retention_frees_old_jobs_files_keeps_named_model_dirs_and_downloads_404(
    tmp_path: Path, redis_server
) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_server.url, admin_key=TEST_ADMIN_KEY)
    with admin_client(create_app(settings)) as admin:
        key = bearer(new_tenant(admin, TENANT))
        store = JobLeases(settings.sqlalchemy_url)
        storage = Storage(settings.storage_root).for_tenant(TENANT)
        old = _finished_job(store, storage, 40_000)
        named = _finished_job(store, storage, 20_000, name="kept")
        recent = _finished_job(store, storage, 10_000)
        with store.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_([old, named]))
                .values(finished_at=utcnow() - timedelta(days=3))
            )

        def usage() -> int:
            me = admin.get("/tenants/me", headers=key)
            assert me.status_code == 200, me.text
            return int(me.json()["usage"]["model_dir_bytes"])

        old_bytes = disk_usage(storage.job_model_dir(old))
        before = usage()
        assert before == old_bytes + disk_usage(storage.named_model_dir("kept")) + disk_usage(
            storage.job_model_dir(recent)
        )
        for job_id in (old, named, recent):
            assert admin.get(f"/jobs/{job_id}/savedmodel", headers=key).status_code == 200

        retained = settings.model_copy(update={"retention_days": 2.0})
        reconciler = Reconciler(retained, make_celery(retained))
        assert reconciler.apply_retention() == 1

        # The old job's own model_dir: gone, its bytes freed, its downloads 404.
        assert not storage.job_model_dir(old).exists()
        assert usage() == before - old_bytes
        for path in (f"/jobs/{old}/savedmodel", f"/jobs/{old}/checkpoints/1"):
            gone = admin.get(path, headers=key)
            assert gone.status_code == 404, (path, gone.text)
            assert gone.headers["content-type"] == PROBLEM
        assert admin.get(f"/jobs/{old}/checkpoints", headers=key).json() == []
        logs = admin.get(f"/jobs/{old}/logs", headers=key).json()["items"]
        assert logs[-1]["message"] == "files removed: retention of 2 days"
        # The named model_dir, as old, and the recent job: kept, still downloadable.
        assert (storage.named_model_dir("kept") / "model.ckpt-1.index").is_file()
        assert storage.job_model_dir(recent).is_dir()
        for job_id in (named, recent):
            assert admin.get(f"/jobs/{job_id}/savedmodel", headers=key).status_code == 200
        # Done once: the next round finds nothing left to remove.
        assert reconciler.apply_retention() == 0
        assert usage() == before - old_bytes
