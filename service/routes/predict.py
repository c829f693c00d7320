"""POST /jobs/{id}/predict: run a job's exported SavedModel on a few examples, on a worker."""

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from k2e.errors import Conflict, FieldError, InvalidInput
from k2e.jobs.instances import check_instances
from k2e.jobs.predictions import PredictionRequests
from k2e.schemas import PredictRequest, PredictResponse
from service import job_files
from service.auth import CallerDep, current_caller
from service.deps import BackendDep
from service.params import JobId
from service.problems import problems
from service.routes.convert import read_body
from service.submission import parse_json

router = APIRouter(tags=["jobs"], dependencies=[Depends(current_caller)], responses=problems(401))

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
        },
    }
}


@router.post(
    "/jobs/{job_id}/predict",
    response_model=PredictResponse,
    openapi_extra=_BODY,
    responses=problems(404, 409, 413, 422, 503, 504),
    summary="Run the job's exported SavedModel on a few examples (on a worker)",
    operation_id="predict",
)
async def predict(
    job_id: JobId, request: Request, backend: BackendDep, caller: CallerDep
) -> PredictResponse:
    settings = backend.settings
    # Another tenant's job is not found, whatever the body: checked first.
    job, _ = await run_in_threadpool(job_files.latest_export_of, backend, job_id, caller)
    data = await read_body(request, settings.predict_max_bytes, "K2E_PREDICT_MAX_BYTES")
    raw = await run_in_threadpool(
        parse_json, data, "the request body", settings.max_json_depth, InvalidInput
    )
    try:
        body = PredictRequest.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    most = settings.predict_max_instances
    if len(body.instances) > most:
        msg = (
            f"{len(body.instances)} instances; the server's limit is {most} "
            "(K2E_PREDICT_MAX_INSTANCES)"
        )
        raise InvalidInput(msg, [FieldError(("instances",), msg)])
    dtypes = await run_in_threadpool(job_files.input_dtypes, backend, job)
    unusable = await run_in_threadpool(check_instances, body.instances, dtypes)
    if unusable:
        raise InvalidInput(unusable[0].msg, unusable)
    if job.tenant is None:
        raise Conflict(f"job {job_id} belongs to no tenant")
    requests = PredictionRequests(settings, backend.sender.celery)
    answer = await run_in_threadpool(
        requests.ask, job.id, job.tenant, job.queue, body.instances, body.signature_name
    )
    return PredictResponse.model_validate(answer)
