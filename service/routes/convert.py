"""POST /convert: a ConvertRequest as JSON, or multipart with `spec` plus files."""

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from k2e.errors import InvalidSpec, InvalidUpload, UploadTooLarge
from k2e.plan_schemas import Plan
from k2e.schemas import Job
from service.auth import CallerDep, current_caller
from service.deps import BackendDep
from service.dry_runs import plan_submission
from service.job_files import shown
from service.multipart import receive_multipart
from service.openapi import request_body
from service.problems import problems
from service.submission import accept, parse_json

router = APIRouter(tags=["jobs"], dependencies=[Depends(current_caller)], responses=problems(401))

FILE_FIELDS = {"model", "train_data", "eval_data"}

_CONVERT_BODY = request_body(
    files=sorted(FILE_FIELDS),
    fields={"spec": "ConvertRequest as JSON"},
    required=["spec"],
    json_ref="ConvertRequest",
)


async def read_body(request: Request, limit: int, setting: str = "K2E_MAX_JSON_BYTES") -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes (the server
    setting ``setting``): never buffered whole first."""
    too_large = f"the JSON body exceeds {setting} ({limit} bytes)"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(too_large)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise UploadTooLarge(too_large)
    return bytes(data)


@router.post(
    "/convert",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    openapi_extra=_CONVERT_BODY,
    responses={
        200: {
            "model": Plan,
            "description": "With `dry_run=true`: what the job would be; nothing is kept.",
        },
        **problems(409, 413, 422, 429, 503),
    },
    summary="Submit a conversion + training job (or, with `dry_run=true`, check it)",
    operation_id="convert",
)
async def convert(
    request: Request,
    response: Response,
    backend: BackendDep,
    caller: CallerDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            description="The same key and body return the same job; another body, 409.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        Query(
            description="Run every check of a submission and answer 200 with the job's "
            "Plan; no job, upload or quota is kept."
        ),
    ] = False,
) -> Job | JSONResponse:
    content_type = request.headers.get("content-type", "")
    settings = backend.settings
    if content_type.startswith("multipart/form-data"):
        limit, limit_name = await run_in_threadpool(backend.upload_limit, caller.tenant)
        body = await receive_multipart(
            request,
            backend.storage.tmp_path,
            FILE_FIELDS,
            limit,
            limit_name,
            max_parts=settings.max_multipart_parts,
            max_field_bytes=min(settings.max_field_bytes, settings.max_json_bytes),
        )
        try:
            if "spec" not in body.fields:
                raise InvalidSpec("the multipart body has no `spec` field")
            raw = await run_in_threadpool(
                parse_json, body.fields["spec"], "`spec`", settings.max_json_depth
            )
            if dry_run:
                plan = await run_in_threadpool(
                    plan_submission, raw, body.files, backend, caller.tenant
                )
                return _planned(plan)
            job = await run_in_threadpool(
                accept, raw, body.files, idempotency_key, backend, caller.tenant
            )
        finally:
            body.discard()
    elif content_type.startswith("application/json") or not content_type:
        data = await read_body(request, settings.max_json_bytes)
        # Scanning and parsing up to K2E_MAX_JSON_BYTES is CPU work: off the event loop.
        raw = await run_in_threadpool(parse_json, data, "the request body", settings.max_json_depth)
        if dry_run:
            plan = await run_in_threadpool(plan_submission, raw, {}, backend, caller.tenant)
            return _planned(plan)
        job = await run_in_threadpool(accept, raw, {}, idempotency_key, backend, caller.tenant)
    else:
        raise InvalidUpload(
            f"unsupported content type {content_type!r}: send application/json or "
            "multipart/form-data"
        )
    response.headers["Location"] = f"/jobs/{job.id}"
    # An Idempotency-Key replay answers the job as it is now: maybe failed, with its error.
    return shown(backend, caller, job)


def _planned(plan: Plan) -> JSONResponse:
    return JSONResponse(plan.model_dump(mode="json"), status_code=status.HTTP_200_OK)
