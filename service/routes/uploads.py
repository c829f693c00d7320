"""Model and dataset uploads, and the custom-object registry."""

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool

from k2e.custom_objects import listing
from k2e.schemas import CustomObjectInfo, DatasetInfo, ModelInfo
from service.deps import SettingsDep, StorageDep
from service.openapi import request_body
from service.problems import problems
from service.uploads import receive_one, store_dataset, store_model

router = APIRouter(tags=["uploads"])

_UPLOAD_BODY = request_body(files=["file"])


@router.post(
    "/models",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelInfo,
    openapi_extra=_UPLOAD_BODY,
    responses=problems(413, 422),
    summary="Upload a compiled Keras model (HDF5 or .keras)",
)
async def upload_model(request: Request, storage: StorageDep, settings: SettingsDep) -> ModelInfo:
    received = await receive_one(request, storage, settings.max_upload_bytes)
    return await run_in_threadpool(store_model, received, storage, settings)


@router.get("/models/{model_id}", response_model=ModelInfo, responses=problems(404))
def get_model(model_id: str, storage: StorageDep) -> ModelInfo:
    return storage.model_info(model_id)


@router.post(
    "/datasets",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetInfo,
    openapi_extra=_UPLOAD_BODY,
    responses=problems(413, 422),
    summary="Upload a dataset (.npz, .csv, .tfrecord[.gz])",
)
async def upload_dataset(
    request: Request, storage: StorageDep, settings: SettingsDep
) -> DatasetInfo:
    received = await receive_one(request, storage, settings.max_upload_bytes)
    return await run_in_threadpool(store_dataset, received, storage)


@router.get("/datasets/{dataset_id}", response_model=DatasetInfo, responses=problems(404))
def get_dataset(dataset_id: str, storage: StorageDep) -> DatasetInfo:
    return storage.dataset_info(dataset_id)


@router.get("/custom-objects", response_model=list[CustomObjectInfo])
def custom_objects(settings: SettingsDep) -> list[CustomObjectInfo]:
    return listing(settings.plugins)
