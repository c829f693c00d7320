"""POST /jobs/{id}/rerun: a new job with a job's inputs (the same spec, its recorded seeds,
the same model and datasets, each checked against the digest the job recorded)."""

from fastapi import APIRouter, Depends, Response, status
from fastapi.concurrency import run_in_threadpool

from k2e.errors import Conflict
from k2e.jobs.provenance import check_inputs, seeded
from k2e.jobs.records import JobRecord
from k2e.schemas import ConvertRequest, Job
from k2e.tenancy.bodies import DEFAULT_TENANT
from service.auth import CallerDep, current_caller, scope
from service.backend import Backend
from service.deps import BackendDep
from service.job_files import shown
from service.params import JobId
from service.problems import problems
from service.submission import submit

router = APIRouter(tags=["jobs"], dependencies=[Depends(current_caller)], responses=problems(401))


def rerun(backend: Backend, job: JobRecord) -> JobRecord:
    """Submit ``job``'s inputs again, as its tenant; Conflict (409) when an input changed or
    the job has no provenance, InvalidSpec (422) when one is gone."""
    if job.provenance is None:
        raise Conflict(f"job {job.id} was recorded before provenance: its seeds are unknown")
    tenant = job.tenant or DEFAULT_TENANT
    spec = ConvertRequest.model_validate(job.spec)
    check_inputs(spec, job.provenance, backend.storage.for_tenant(tenant))
    return submit(seeded(spec, job.provenance.seeds), backend, tenant)


@router.post(
    "/jobs/{job_id}/rerun",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    responses=problems(404, 409, 422, 429, 503),
    summary="A new job with this job's inputs: its spec, recorded seeds, model and datasets "
    "(409 when one changed, 422 when one is gone)",
    operation_id="rerunJob",
)
async def rerun_job(
    job_id: JobId, backend: BackendDep, caller: CallerDep, response: Response
) -> Job:
    job = await run_in_threadpool(backend.store.get, job_id, scope(caller))
    new = await run_in_threadpool(rerun, backend, job)
    response.headers["Location"] = f"/jobs/{new.id}"
    return shown(backend, caller, new)
