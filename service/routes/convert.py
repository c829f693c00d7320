"""POST /convert: a ConvertRequest as JSON, or multipart with `spec` plus files."""

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from k2e.errors import InvalidSpec, InvalidUpload
from k2e.schemas import Job
from service.auth import CallerDep, current_caller
from service.deps import BackendDep
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


@router.post(
    "/convert",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    openapi_extra=_CONVERT_BODY,
    responses=problems(409, 413, 422, 429, 503),
    summary="Submit a conversion + training job",
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
) -> Job:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        limit, limit_name = await run_in_threadpool(backend.upload_limit, caller.tenant)
        body = await receive_multipart(
            request, backend.storage.tmp_path, FILE_FIELDS, limit, limit_name
        )
        try:
            if "spec" not in body.fields:
                raise InvalidSpec("the multipart body has no `spec` field")
            raw = parse_json(body.fields["spec"], "`spec`")
            job = await run_in_threadpool(
                accept, raw, body.files, idempotency_key, backend, caller.tenant
            )
        finally:
            body.discard()
    elif content_type.startswith("application/json") or not content_type:
        raw = parse_json(await request.body(), "the request body")
        job = await run_in_threadpool(accept, raw, {}, idempotency_key, backend, caller.tenant)
    else:
        raise InvalidUpload(
            f"unsupported content type {content_type!r}: send application/json or "
            "multipart/form-data"
        )
    response.headers["Location"] = f"/jobs/{job.id}"
    return job
