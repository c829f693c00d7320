"""POST /convert: a ConvertRequest as JSON, or multipart with `spec` plus files."""

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from k2e.errors import InvalidSpec, InvalidUpload
from k2e.schemas import ConvertRequest, Job
from service.conversion import inject_uploads, remove_entries, replay, request_hash, submit
from service.deps import SenderDep, SettingsDep, StorageDep, StoreDep
from service.multipart import receive_multipart
from service.problems import problems
from service.routes.uploads import sha256_of, store_dataset, store_model

router = APIRouter(tags=["jobs"])

SPEC_REF = {"$ref": "#/components/schemas/ConvertRequest"}
_CONVERT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": SPEC_REF},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "string", "description": "ConvertRequest as JSON"},
                        "model": {"type": "string", "format": "binary"},
                        "train_data": {"type": "string", "format": "binary"},
                        "eval_data": {"type": "string", "format": "binary"},
                    },
                    "required": ["spec"],
                }
            },
        },
    }
}


def _parse(raw: Any) -> ConvertRequest:
    if not isinstance(raw, dict):
        raise RequestValidationError(
            [{"loc": (), "msg": "the spec must be a JSON object", "type": "type_error"}]
        )
    try:
        return ConvertRequest.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSpec(f"{what} is not valid JSON: {exc}") from None


@router.post(
    "/convert",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    openapi_extra=_CONVERT_BODY,
    responses=problems(409, 413, 422, 503),
    summary="Submit a conversion + training job",
)
async def convert(
    request: Request,
    response: Response,
    store: StoreDep,
    storage: StorageDep,
    sender: SenderDep,
    settings: SettingsDep,
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
        job = await _convert_multipart(request, store, storage, sender, settings, idempotency_key)
    elif content_type.startswith("application/json") or not content_type:
        raw = _json(await request.body(), "the request body")
        body_hash = request_hash(raw)
        previous = replay(store, idempotency_key, body_hash)
        if previous is not None:
            job = previous
        else:
            job = await run_in_threadpool(
                submit, _parse(raw), store, storage, sender, settings, idempotency_key, body_hash
            )
    else:
        raise InvalidUpload(
            f"unsupported content type {content_type!r}: send application/json or "
            "multipart/form-data"
        )
    response.headers["Location"] = f"/jobs/{job.id}"
    return job


async def _convert_multipart(
    request: Request,
    store: StoreDep,
    storage: StorageDep,
    sender: SenderDep,
    settings: SettingsDep,
    idempotency_key: str | None,
) -> Job:
    body = await receive_multipart(
        request, storage.tmp_path, {"model", "train_data", "eval_data"}, settings.max_upload_bytes
    )
    created: dict[str, list[str]] = {"models": [], "datasets": []}
    try:
        if "spec" not in body.fields:
            raise InvalidSpec("the multipart body has no `spec` field")
        raw = _json(body.fields["spec"], "`spec`")
        if not isinstance(raw, dict):
            _parse(raw)
        file_hashes = {
            field: await run_in_threadpool(sha256_of, received.path)
            for field, received in body.files.items()
        }
        body_hash = request_hash(raw, file_hashes)
        previous = replay(store, idempotency_key, body_hash)
        if previous is not None:
            return previous
        ids: dict[str, str] = {}
        for field, received in body.files.items():
            if field == "model":
                model = await run_in_threadpool(store_model, received, storage, settings)
                created["models"].append(model.id)
                ids[field] = model.id
            else:
                dataset = await run_in_threadpool(store_dataset, received, storage)
                created["datasets"].append(dataset.id)
                ids[field] = dataset.id
        spec = _parse(inject_uploads(raw, ids))
        return await run_in_threadpool(
            submit, spec, store, storage, sender, settings, idempotency_key, body_hash
        )
    except Exception:
        # A refused submission keeps nothing it uploaded.
        for kind, entry_ids in created.items():
            remove_entries(storage, kind, entry_ids)
        raise
    finally:
        body.discard()
