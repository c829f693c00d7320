"""Model and dataset uploads (each tenant's own), and the custom-object registry."""

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from k2e.custom_objects import listing
from k2e.schemas import CustomObjectInfo, DatasetInfo, DatasetPage, ModelInfo, ModelPage
from service.auth import CallerDep, current_caller, list_scope, scope
from service.deps import BackendDep, SettingsDep
from service.openapi import request_body
from service.params import Cursor, DatasetId, Limit, ModelId, TenantFilter
from service.problems import problems
from service.uploads import delete_upload, receive_one, store_dataset, store_model

router = APIRouter(
    tags=["uploads"], dependencies=[Depends(current_caller)], responses=problems(401)
)

_UPLOAD_BODY = request_body(files=["file"])


@router.post(
    "/models",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelInfo,
    openapi_extra=_UPLOAD_BODY,
    responses=problems(413, 422),
    summary="Upload a compiled Keras model (HDF5 or .keras)",
    operation_id="uploadModel",
)
async def upload_model(request: Request, backend: BackendDep, caller: CallerDep) -> ModelInfo:
    received = await receive_one(request, backend, caller.tenant)
    return await run_in_threadpool(store_model, received, backend, caller.tenant)


@router.get(
    "/models",
    response_model=ModelPage,
    responses=problems(403, 422),
    summary="The caller's models, newest first",
    operation_id="listModels",
)
def list_models(
    backend: BackendDep,
    caller: CallerDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    tenant: TenantFilter = None,
) -> ModelPage:
    items, next_cursor = backend.catalog.list("model", list_scope(caller, tenant), limit, cursor)
    return ModelPage.model_validate({"items": items, "next_cursor": next_cursor})


@router.get(
    "/models/{model_id}", response_model=ModelInfo, responses=problems(404), operation_id="getModel"
)
def get_model(model_id: ModelId, backend: BackendDep, caller: CallerDep) -> ModelInfo:
    return backend.catalog.get_model(model_id, scope(caller))


@router.delete(
    "/models/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404, 409),
    summary="Delete a model (409 while a job that has not ended uses it)",
    operation_id="deleteModel",
)
def delete_model(model_id: ModelId, backend: BackendDep, caller: CallerDep) -> Response:
    delete_upload("model", model_id, backend, scope(caller))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/datasets",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetInfo,
    openapi_extra=_UPLOAD_BODY,
    responses=problems(413, 422),
    summary="Upload a dataset (.npz, .csv, .tfrecord[.gz])",
    operation_id="uploadDataset",
)
async def upload_dataset(request: Request, backend: BackendDep, caller: CallerDep) -> DatasetInfo:
    received = await receive_one(request, backend, caller.tenant)
    return await run_in_threadpool(store_dataset, received, backend, caller.tenant)


@router.get(
    "/datasets",
    response_model=DatasetPage,
    responses=problems(403, 422),
    summary="The caller's datasets, newest first",
    operation_id="listDatasets",
)
def list_datasets(
    backend: BackendDep,
    caller: CallerDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    tenant: TenantFilter = None,
) -> DatasetPage:
    items, next_cursor = backend.catalog.list("dataset", list_scope(caller, tenant), limit, cursor)
    return DatasetPage.model_validate({"items": items, "next_cursor": next_cursor})


@router.get(
    "/datasets/{dataset_id}",
    response_model=DatasetInfo,
    responses=problems(404),
    operation_id="getDataset",
)
def get_dataset(dataset_id: DatasetId, backend: BackendDep, caller: CallerDep) -> DatasetInfo:
    return backend.catalog.get_dataset(dataset_id, scope(caller))


@router.delete(
    "/datasets/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404, 409),
    summary="Delete a dataset (409 while a job that has not ended uses it)",
    operation_id="deleteDataset",
)
def delete_dataset(dataset_id: DatasetId, backend: BackendDep, caller: CallerDep) -> Response:
    delete_upload("dataset", dataset_id, backend, scope(caller))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/custom-objects",
    response_model=list[CustomObjectInfo],
    summary="Names usable in `custom_objects`",
    operation_id="listCustomObjects",
)
def custom_objects(settings: SettingsDep) -> list[CustomObjectInfo]:
    return listing(settings.plugins)
