"""The k2e API plus variant routes, to attribute GET /jobs/{id}'s cost (bench only).

``uvicorn bench.probe_app:create --factory`` serves everything service.main serves, and
variants of /healthz and GET /jobs/{id}. A sync ``def`` dependency or endpoint costs a
trip through AnyIO's thread pool, and so does the response validation of a sync endpoint.

- ``/probe/healthz``: an empty ``async def`` route: what the framework alone costs.
- ``/probe/jobs-sync/{id}``: dependencies and endpoint as sync ``def`` (4 trips:
  the id check, the store, the endpoint, the response validation).
- ``/probe/jobs-async-deps/{id}``: dependencies ``async def``, endpoint sync (2 trips).
- ``/probe/jobs-async/{id}``: everything ``async def``; ``JobStore.get`` runs inline.
- ``/probe/jobs-cached/{id}``: ``async def`` serving a finished job's JSON from an
  in-process cache (a finished job never changes); other jobs are read as usual.

Nothing here changes service/ or k2e/; the variants show what a change there would give.
"""

from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response

from k2e.jobs.job_store import JobStore
from k2e.schemas import TERMINAL_STATUSES, Job
from k2e.tenancy.scope import ANY_TENANT
from service.main import create_app


def _sync_store(request: Request) -> JobStore:
    return request.app.state.backend.store


def _sync_job_id(job_id: str) -> str:
    return job_id


async def _store(request: Request) -> JobStore:
    return request.app.state.backend.store


SyncStore = Annotated[JobStore, Depends(_sync_store)]
SyncJobId = Annotated[str, Depends(_sync_job_id)]
AsyncStore = Annotated[JobStore, Depends(_store)]


def create() -> FastAPI:
    app = create_app()

    @app.get("/probe/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/probe/jobs-sync/{job_id}", response_model=Job)
    def jobs_sync(job_id: SyncJobId, store: SyncStore) -> Job:
        return store.get(job_id, ANY_TENANT).public()

    @app.get("/probe/jobs-async-deps/{job_id}", response_model=Job)
    def jobs_async_deps(job_id: str, store: AsyncStore) -> Job:
        return store.get(job_id, ANY_TENANT).public()

    @app.get("/probe/jobs-async/{job_id}", response_model=Job)
    async def jobs_async(job_id: str, store: AsyncStore) -> Job:
        return store.get(job_id, ANY_TENANT).public()

    finished: dict[str, bytes] = {}

    @app.get("/probe/jobs-cached/{job_id}")
    async def jobs_cached(job_id: str, store: AsyncStore) -> Response:
        body = finished.get(job_id)
        if body is None:
            job = store.get(job_id, ANY_TENANT).public()
            body = job.model_dump_json().encode()
            if job.status in TERMINAL_STATUSES:
                finished[job_id] = body
        return Response(body, media_type="application/json")

    return app
