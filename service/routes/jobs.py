"""Jobs: status, listing, cancel, suspend and resume, delete, logs, metrics, and downloads
from the job's model_dir. A member sees its tenant's jobs only; another tenant's id is not
found."""

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from k2e.formats.tfevents import read_scalars
from k2e.schemas import CheckpointInfo, Job, JobLog, JobPage, JobScalars, JobStatus
from service import download_links, job_files
from service.archive import Stored, TarPlan, tar_gz_stream
from service.auth import CallerDep, current_caller, list_scope, scope
from service.deps import BackendDep
from service.params import Cursor, JobId, Limit, TenantFilter
from service.problems import problems

router = APIRouter(tags=["jobs"], dependencies=[Depends(current_caller)], responses=problems(401))

_ARCHIVE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/gzip": {}, "application/x-tar": {}},
        "description": "a tar.gz archive (the default), or the same tar uncompressed",
    }
}
TAR = "application/x-tar"
ArchiveFormat = Annotated[
    Literal["tar.gz", "tar"] | None,
    Query(
        description="`tar.gz` (the default) or `tar`: the same members uncompressed, sent "
        f"with a Content-Length at the server's full speed; `Accept: {TAR}` also asks for it",
    ),
]
AcceptHeader = Annotated[str | None, Header(include_in_schema=False)]
Redirect = Annotated[
    bool,
    Query(
        description="`true`: a 307 to a presigned URL of the bucket that serves the same "
        "archive for `K2E_S3_PRESIGN_S` seconds (bucket storage only: 409 on a server that "
        "keeps its files in a local folder)",
    ),
]
_REDIRECT: dict[int | str, dict[str, Any]] = {
    307: {"description": "`redirect=true`: the archive at a presigned URL (Location)"}
}
_MAX_SEQ = 2**31 - 1


@router.get("/jobs", response_model=JobPage, responses=problems(403, 422), operation_id="listJobs")
def list_jobs(
    backend: BackendDep,
    caller: CallerDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    tenant: TenantFilter = None,
) -> JobPage:
    page = backend.store.list_jobs(list_scope(caller, tenant), status_, limit, cursor)
    places = backend.placement.places(page.items)
    clusters = backend.clusters.of_many(page.items)
    items = [job_files.shown(backend, caller, r, places.get(r.id), clusters) for r in page.items]
    return JobPage(items=items, next_cursor=page.next_cursor)


@router.get("/jobs/{job_id}", response_model=Job, responses=problems(404), operation_id="getJob")
async def get_job(
    job_id: JobId, backend: BackendDep, caller: CallerDep, request: Request
) -> Response:
    # The hottest route: the store is read off the event loop, and a job's JSON is kept
    # briefly in memory (service/jobcache.py).
    body = await request.app.state.job_cache.read(backend.store, job_id, scope(caller))
    return Response(body, media_type="application/json")


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    responses=problems(404),
    operation_id="cancelJob",
)
def cancel_job(job_id: JobId, backend: BackendDep, caller: CallerDep, request: Request) -> Job:
    job = job_files.cancel_job(backend, job_id, caller)
    request.app.state.job_cache.forget(job_id)
    return job_files.shown(backend, caller, job)


@router.post(
    "/jobs/{job_id}/suspend",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    responses=problems(404, 409),
    summary="Suspend: checkpoint at the next step and give the worker back (status "
    "`suspended`; 409 from a job that ended or is being cancelled)",
    operation_id="suspendJob",
)
def suspend_job(job_id: JobId, backend: BackendDep, caller: CallerDep, request: Request) -> Job:
    job = job_files.suspend_job(backend, job_id, caller)
    request.app.state.job_cache.forget(job_id)
    return job_files.shown(backend, caller, job)


@router.post(
    "/jobs/{job_id}/resume",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    responses=problems(404, 409),
    summary="Resume a suspended job from its newest checkpoint (a suspend still pending "
    "is withdrawn; 409 otherwise)",
    operation_id="resumeJob",
)
def resume_job(job_id: JobId, backend: BackendDep, caller: CallerDep, request: Request) -> Job:
    job = job_files.resume_job(backend, job_id, caller)
    request.app.state.job_cache.forget(job_id)
    return job_files.shown(backend, caller, job)


@router.delete(
    "/jobs/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404, 409),
    summary="Delete a finished job and its files (409 while it is queued or running)",
    operation_id="deleteJob",
)
def delete_job(job_id: JobId, backend: BackendDep, caller: CallerDep, request: Request) -> Response:
    job_files.delete_job(backend, job_id, caller)
    request.app.state.job_cache.forget(job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _wants_tar(fmt: str | None, accept: str | None) -> bool:
    return fmt == "tar" or (fmt is None and accept is not None and TAR in accept)


def _download(
    members: list[tuple[Path | Stored, str]], name: str, fmt: str | None, accept: str | None
) -> StreamingResponse:
    plan = TarPlan(members)
    if _wants_tar(fmt, accept):
        return StreamingResponse(
            plan.stream(),
            media_type=TAR,
            headers={
                "Content-Disposition": f'attachment; filename="{name}.tar"',
                "Content-Length": str(plan.length),
            },
        )
    return StreamingResponse(
        tar_gz_stream(plan),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar.gz"'},
    )


def _send(
    backend: BackendDep,
    job_id: str,
    caller: CallerDep,
    members: list[tuple[Path | Stored, str]],
    name: str,
    fmt: str | None,
    accept: str | None,
    redirect: bool,
) -> Response:
    if not redirect:
        return _download(members, name, fmt, accept)
    download_links.require_bucket(backend.storage)
    model_dir = job_files.model_dir_of(backend, job_id, caller)[1]
    filename = f"{name}.tar" if _wants_tar(fmt, accept) else f"{name}.tar.gz"
    expires = backend.settings.s3_presign_s
    return download_links.redirect(
        backend.storage, backend.store, job_id, model_dir, members, filename, expires
    )


@router.get(
    "/jobs/{job_id}/savedmodel",
    responses={**_ARCHIVE, **_REDIRECT, **problems(404, 409, 422)},
    response_class=StreamingResponse,
    summary="The newest export as tar.gz (or `?format=tar`) in the TF Serving layout",
    operation_id="downloadSavedModel",
)
def download_savedmodel(
    job_id: JobId,
    backend: BackendDep,
    caller: CallerDep,
    format: ArchiveFormat = None,
    redirect: Redirect = False,
    accept: AcceptHeader = None,
) -> Response:
    version, members = job_files.latest_export(backend, job_id, caller)
    name = f"{job_id}-savedmodel-{version}"
    return _send(backend, job_id, caller, members, name, format, accept, redirect)


@router.get(
    "/jobs/{job_id}/checkpoints",
    response_model=list[CheckpointInfo],
    responses=problems(404),
    operation_id="listCheckpoints",
)
def list_checkpoints(job_id: JobId, backend: BackendDep, caller: CallerDep) -> list[CheckpointInfo]:
    return job_files.checkpoints(backend, job_id, caller)


@router.get(
    "/jobs/{job_id}/checkpoints/{step}",
    responses={**_ARCHIVE, **_REDIRECT, **problems(404, 409, 422)},
    response_class=StreamingResponse,
    summary="One checkpoint's files as tar.gz (or `?format=tar`)",
    operation_id="downloadCheckpoint",
)
def download_checkpoint(
    job_id: JobId,
    step: int,
    backend: BackendDep,
    caller: CallerDep,
    format: ArchiveFormat = None,
    redirect: Redirect = False,
    accept: AcceptHeader = None,
) -> Response:
    members = job_files.checkpoint_files(backend, job_id, step, caller)
    name = f"{job_id}-ckpt-{step}"
    return _send(backend, job_id, caller, members, name, format, accept, redirect)


@router.get(
    "/jobs/{job_id}/logs",
    response_model=JobLog,
    responses=problems(404, 422),
    summary="The job's transitions and worker log lines; follow with `since`",
    operation_id="getJobLogs",
)
def job_logs(
    job_id: JobId,
    backend: BackendDep,
    caller: CallerDep,
    since: Annotated[int, Query(ge=0, le=_MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> JobLog:
    return job_files.job_log(backend, job_id, since, limit, caller)


@router.get(
    "/jobs/{job_id}/metrics",
    response_model=JobScalars,
    responses=problems(404),
    summary="Scalar series from the TensorBoard event files in the job's model_dir",
    operation_id="getJobMetrics",
)
def job_metrics(job_id: JobId, backend: BackendDep, caller: CallerDep) -> JobScalars:
    model_dir = job_files.model_dir_of(backend, job_id, caller)[1]
    with job_files.event_files(backend, model_dir) as local:
        runs = read_scalars(local) if local.is_dir() else {}
    return JobScalars.model_validate({"runs": runs})
