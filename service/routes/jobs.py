"""Jobs: status, listing, cancel, and downloads from the job's model_dir."""

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from k2e.errors import NotFound
from k2e.formats.tfevents import read_scalars
from k2e.schemas import CheckpointInfo, Job, JobEvent, JobLog, JobPage, JobScalars, JobStatus
from k2e.storage import Storage
from service.archive import tar_gz_stream, tree_members
from service.deps import StorageDep, StoreDep
from service.problems import problems

router = APIRouter(tags=["jobs"])

_GZIP: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/gzip": {}}, "description": "a tar.gz archive"}
}


# A cursor is the `seq` of the last job on a page, as decimal digits. `seq` is an INTEGER
# column (int4 on PostgreSQL): a larger cursor lies past every job, so it means the first page
# (passing it on would overflow the driver: a 500, not an answer).
_CURSOR_PATTERN = r"^[0-9]{1,18}$"
_MAX_SEQ = 2**31 - 1
# Job ids are the UUIDs k2e issues; the store's column is String(64).
_MAX_JOB_ID = 64


async def _job_id(job_id: str) -> str:
    """An id no job can have is simply unknown (404); it never reaches the store's driver,
    which refuses some strings outright (PostgreSQL: a NUL byte is a DataError)."""
    if len(job_id) > _MAX_JOB_ID or "\x00" in job_id:
        raise NotFound(f"no job with id {job_id[:_MAX_JOB_ID]!r}")
    return job_id


JobId = Annotated[str, Depends(_job_id)]


@router.get("/jobs", response_model=JobPage, responses=problems(422))
def list_jobs(
    store: StoreDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None,
        Query(
            pattern=_CURSOR_PATTERN,
            description="`next_cursor` of the previous page (opaque; decimal digits)",
        ),
    ] = None,
) -> JobPage:
    if cursor is not None and int(cursor) > _MAX_SEQ:
        cursor = None
    return store.list_jobs(status_, limit, cursor)


@router.get("/jobs/{job_id}", response_model=Job, responses=problems(404))
async def get_job(job_id: JobId, store: StoreDep, request: Request) -> Response:
    # The hottest route: the store is read in the thread pool (never on the event loop),
    # and an ended job's JSON comes from memory (service/jobcache.py).
    body = await request.app.state.job_cache.read(store, job_id)
    return Response(body, media_type="application/json")


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    responses=problems(404),
)
def cancel_job(job_id: JobId, store: StoreDep, request: Request) -> Job:
    job = store.request_cancel(job_id)
    request.app.state.job_cache.forget(job_id)
    return job


def _download(stream_of: list[tuple[Path, str]], filename: str) -> StreamingResponse:
    return StreamingResponse(
        tar_gz_stream(stream_of),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/jobs/{job_id}/savedmodel",
    responses={**_GZIP, **problems(404)},
    response_class=StreamingResponse,
    summary="The newest export as tar.gz in the TF Serving layout",
)
def download_savedmodel(job_id: JobId, store: StoreDep, storage: StorageDep) -> StreamingResponse:
    job = store.get(job_id)
    export = Storage.latest_export(Path(job.model_dir))
    if export is None:
        raise NotFound(f"job {job_id} has no exported SavedModel (status {job.status.value})")
    return _download(tree_members(export, export.name), f"{job_id}-savedmodel-{export.name}.tar.gz")


@router.get(
    "/jobs/{job_id}/checkpoints", response_model=list[CheckpointInfo], responses=problems(404)
)
def list_checkpoints(job_id: JobId, store: StoreDep) -> list[CheckpointInfo]:
    return Storage.checkpoints(Path(store.get(job_id).model_dir))


@router.get(
    "/jobs/{job_id}/checkpoints/{step}",
    responses={**_GZIP, **problems(404)},
    response_class=StreamingResponse,
    summary="One checkpoint's files as tar.gz",
)
def download_checkpoint(job_id: JobId, step: int, store: StoreDep) -> StreamingResponse:
    model_dir = Path(store.get(job_id).model_dir)
    files = Storage.checkpoint_files(model_dir, step) if model_dir.is_dir() else []
    if not files:
        raise NotFound(f"job {job_id} has no checkpoint at step {step}")
    members = [(f, f.name) for f in files]
    return _download(members, f"{job_id}-ckpt-{step}.tar.gz")


@router.get(
    "/jobs/{job_id}/logs",
    response_model=JobLog,
    responses=problems(404, 422),
    summary="The job's transitions and worker log lines; follow with `since`",
)
def job_logs(
    job_id: JobId,
    store: StoreDep,
    since: Annotated[int, Query(ge=0, le=_MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> JobLog:
    store.get(job_id)  # 404 for unknown jobs
    items = [JobEvent(**e) for e in store.events(job_id, since, limit)]
    return JobLog(items=items, next_since=items[-1].seq if items else since)


@router.get(
    "/jobs/{job_id}/metrics",
    response_model=JobScalars,
    responses=problems(404),
    summary="Scalar series from the TensorBoard event files in the job's model_dir",
)
def job_metrics(job_id: JobId, store: StoreDep) -> JobScalars:
    model_dir = Path(store.get(job_id).model_dir)
    runs = read_scalars(model_dir) if model_dir.is_dir() else {}
    return JobScalars.model_validate({"runs": runs})
