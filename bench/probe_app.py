"""The k2e API plus variant routes, to attribute GET /jobs/{id}'s cost (bench only).

``uvicorn bench.probe_app:create --factory`` serves everything service.main serves, and:

- ``/probe/healthz``: /healthz as ``async def`` (k2e's is a sync ``def``: a threadpool hop).
- ``/probe/jobs-1hop/{id}``: GET /jobs/{id} with its dependency as ``async def``; the
  endpoint stays sync (one threadpool hop instead of three: ``_job_id``, ``_store``, the
  endpoint).
- ``/probe/jobs-0hop/{id}``: GET /jobs/{id} as ``async def`` (the SQLite read inline).
- ``/probe/jobs-0hop-prebuilt/{id}``: as 0hop, with the SELECT statement built once
  (JobStore.get builds and caches-by-key a new one per call).

Nothing here changes service/; the variants are what a fix there would look like.
"""

from typing import Annotated

from fastapi import Depends, FastAPI, Request
from sqlalchemy import bindparam, select

from k2e.errors import NotFound
from k2e.jobstore import JobStore, _to_job
from k2e.schemas import Job
from k2e.tables import jobs
from service.main import create_app

_BY_ID = select(jobs).where(jobs.c.id == bindparam("job_id"))


async def _store(request: Request) -> JobStore:
    return request.app.state.store


AsyncStore = Annotated[JobStore, Depends(_store)]


def get_prebuilt(store: JobStore, job_id: str) -> Job:
    with store.engine.connect() as conn:
        row = conn.execute(_BY_ID, {"job_id": job_id}).mappings().first()
    if row is None:
        raise NotFound(f"no job with id {job_id!r}")
    return _to_job(row)


def create() -> FastAPI:
    app = create_app()

    @app.get("/probe/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/probe/jobs-1hop/{job_id}", response_model=Job)
    def jobs_1hop(job_id: str, store: AsyncStore) -> Job:
        return store.get(job_id)

    @app.get("/probe/jobs-0hop/{job_id}", response_model=Job)
    async def jobs_0hop(job_id: str, store: AsyncStore) -> Job:
        return store.get(job_id)

    @app.get("/probe/jobs-0hop-prebuilt/{job_id}", response_model=Job)
    async def jobs_0hop_prebuilt(job_id: str, store: AsyncStore) -> Job:
        return get_prebuilt(store, job_id)

    return app
