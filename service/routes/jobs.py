"""Jobs: status, listing, cancel, and downloads from the job's model_dir."""

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import StreamingResponse

from k2e.errors import NotFound
from k2e.schemas import CheckpointInfo, Job, JobPage, JobStatus
from k2e.storage import Storage
from service.archive import tar_gz_stream, tree_members
from service.deps import StorageDep, StoreDep
from service.problems import problems

router = APIRouter(tags=["jobs"])

_GZIP: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/gzip": {}}, "description": "a tar.gz archive"}
}


@router.get("/jobs", response_model=JobPage, responses=problems(422))
def list_jobs(
    store: StoreDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> JobPage:
    return store.list_jobs(status_, limit, cursor)


@router.get("/jobs/{job_id}", response_model=Job, responses=problems(404))
def get_job(job_id: str, store: StoreDep) -> Job:
    return store.get(job_id)


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    responses=problems(404),
)
def cancel_job(job_id: str, store: StoreDep) -> Job:
    return store.request_cancel(job_id)


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
def download_savedmodel(job_id: str, store: StoreDep, storage: StorageDep) -> StreamingResponse:
    job = store.get(job_id)
    export = Storage.latest_export(Path(job.model_dir))
    if export is None:
        raise NotFound(f"job {job_id} has no exported SavedModel (status {job.status.value})")
    return _download(tree_members(export, export.name), f"{job_id}-savedmodel-{export.name}.tar.gz")


@router.get(
    "/jobs/{job_id}/checkpoints", response_model=list[CheckpointInfo], responses=problems(404)
)
def list_checkpoints(job_id: str, store: StoreDep) -> list[CheckpointInfo]:
    return Storage.checkpoints(Path(store.get(job_id).model_dir))


@router.get(
    "/jobs/{job_id}/checkpoints/{step}",
    responses={**_GZIP, **problems(404)},
    response_class=StreamingResponse,
    summary="One checkpoint's files as tar.gz",
)
def download_checkpoint(job_id: str, step: int, store: StoreDep) -> StreamingResponse:
    model_dir = Path(store.get(job_id).model_dir)
    files = Storage.checkpoint_files(model_dir, step) if model_dir.is_dir() else []
    if not files:
        raise NotFound(f"job {job_id} has no checkpoint at step {step}")
    members = [(f, f.name) for f in files]
    return _download(members, f"{job_id}-ckpt-{step}.tar.gz")
