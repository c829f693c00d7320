"""Model and dataset uploads (each tenant's own), and the custom-object registry.

Models and datasets answer the same four routes (upload, list, get, delete); one
function declares them for each kind.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from k2e.catalog import Kind
from k2e.custom_registry import listing
from k2e.schemas import CustomObjectInfo, DatasetInfo, DatasetPage, ModelInfo, ModelPage
from service.auth import CallerDep, current_caller, list_scope, scope
from service.backend import Backend
from service.deps import BackendDep, SettingsDep
from service.openapi import request_body
from service.params import Cursor, Limit, TenantFilter, dataset_id, model_id
from service.problems import problems
from service.upload_intake import delete_upload, receive_one, store_dataset, store_model

router = APIRouter(
    tags=["uploads"], dependencies=[Depends(current_caller)], responses=problems(401)
)


def _upload_routes(
    kind: Kind,
    info: type[BaseModel],
    page: type[BaseModel],
    check_id: Callable[[str], Any],
    keep: Callable[[Any, Backend, str], BaseModel],
    what: str,
) -> None:
    """POST /{kind}s, GET /{kind}s, GET and DELETE /{kind}s/{id} for one kind of upload."""
    noun, title = f"{kind}s", kind.capitalize()
    path = f"/{noun}/{{{kind}_id}}"

    @router.post(
        f"/{noun}",
        status_code=status.HTTP_201_CREATED,
        response_model=info,
        openapi_extra=request_body(files=["file"]),
        responses=problems(413, 422, 503),
        summary=f"Upload {what}",
        operation_id=f"upload{title}",
    )
    async def upload(request: Request, backend: BackendDep, caller: CallerDep) -> Any:
        received = await receive_one(request, backend, caller.tenant, kind)
        return await run_in_threadpool(keep, received, backend, caller.tenant)

    @router.get(
        f"/{noun}",
        response_model=page,
        responses=problems(403, 422),
        summary=f"The caller's {noun}, newest first",
        operation_id=f"list{title}s",
    )
    def list_(
        backend: BackendDep,
        caller: CallerDep,
        limit: Limit = 50,
        cursor: Cursor = None,
        tenant: TenantFilter = None,
    ) -> Any:
        items, next_cursor = backend.catalog.list(kind, list_scope(caller, tenant), limit, cursor)
        return page.model_validate({"items": items, "next_cursor": next_cursor})

    UploadId = Annotated[str, Depends(check_id)]  # noqa: N806 - a type alias

    @router.get(
        path,
        response_model=info,
        responses=problems(404),
        summary=f"One {kind}: what its inspection found",
        operation_id=f"get{title}",
    )
    def get(upload_id: UploadId, backend: BackendDep, caller: CallerDep) -> Any:
        return info.model_validate(backend.catalog.info(kind, upload_id, scope(caller)))

    @router.delete(
        path,
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        responses=problems(404, 409),
        summary=f"Delete a {kind} (409 while a job that has not ended uses it)",
        operation_id=f"delete{title}",
    )
    def delete(upload_id: UploadId, backend: BackendDep, caller: CallerDep) -> Response:
        delete_upload(kind, upload_id, backend, scope(caller))
        return Response(status_code=status.HTTP_204_NO_CONTENT)


_upload_routes(
    "model", ModelInfo, ModelPage, model_id, store_model, "a compiled Keras model (HDF5 or .keras)"
)
_upload_routes(
    "dataset",
    DatasetInfo,
    DatasetPage,
    dataset_id,
    store_dataset,
    "a dataset (.npz, .csv, .tfrecord[.gz])",
)


@router.get(
    "/custom-objects",
    response_model=list[CustomObjectInfo],
    summary="Names usable in `custom_objects`",
    operation_id="listCustomObjects",
)
def custom_objects(settings: SettingsDep) -> list[CustomObjectInfo]:
    return listing(settings.plugins)
