"""Model and dataset uploads, and the custom-object registry."""

import hashlib
from pathlib import Path

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool

from k2e.custom_objects import listing
from k2e.errors import InvalidUpload
from k2e.inspection import inspect_h5
from k2e.npz import inspect_npz
from k2e.schemas import CustomObjectInfo, DatasetInfo, ModelInfo
from k2e.storage import Storage, new_id
from service.deps import SettingsDep, StorageDep
from service.multipart import ReceivedFile, receive_multipart
from service.problems import problems

router = APIRouter(tags=["uploads"])

MODEL_SUFFIXES = {".h5": "h5", ".hdf5": "h5"}
DATASET_SUFFIXES = {".npz": "npz"}

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


async def _receive_one(request: Request, storage: Storage, limit: int) -> ReceivedFile:
    body = await receive_multipart(request, storage.tmp_path, {"file"}, limit)
    if "file" not in body.files:
        body.discard()
        raise InvalidUpload("the multipart body has no `file` part")
    received = body.files["file"]
    if received.size == 0:
        body.discard()
        raise InvalidUpload("the uploaded file is empty")
    return received


def _format_of(received: ReceivedFile, suffixes: dict[str, str]) -> str:
    fmt = suffixes.get(Path(received.filename).suffix.lower())
    if fmt is None:
        received.path.unlink(missing_ok=True)
        raise InvalidUpload(
            f"{received.filename!r}: expected a file ending in one of {sorted(suffixes)}"
        )
    return fmt


def store_model(received: ReceivedFile, storage: Storage) -> ModelInfo:
    """Inspect an uploaded HDF5 with h5py and keep it; the file is removed if it is refused."""
    fmt = _format_of(received, MODEL_SUFFIXES)
    try:
        summary = inspect_h5(received.path)
        info = ModelInfo(
            id=new_id(),
            format=fmt,
            inputs=summary.summary.inputs,
            outputs=summary.summary.outputs,
            compiled=summary.compiled,
            metric_names=summary.metric_names,
            sha256=sha256_of(received.path),
            size=received.size,
            model_class=summary.summary.model_class,
        )
        storage.save_entry("models", info.id, received.path, f"model.{fmt}", info)
        return info
    finally:
        received.path.unlink(missing_ok=True)


def store_dataset(received: ReceivedFile, storage: Storage) -> DatasetInfo:
    fmt = _format_of(received, DATASET_SUFFIXES)
    try:
        summary = inspect_npz(received.path)
        info = DatasetInfo(
            id=new_id(),
            format=fmt,
            num_examples=summary.num_examples,
            arrays=summary.arrays,
            dtypes=summary.dtypes,
            sha256=sha256_of(received.path),
            size=received.size,
        )
        storage.save_entry("datasets", info.id, received.path, f"data.{fmt}", info)
        return info
    finally:
        received.path.unlink(missing_ok=True)


@router.post(
    "/models",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelInfo,
    openapi_extra=_UPLOAD_BODY,
    responses=problems(413, 422),
    summary="Upload a compiled Keras model (HDF5)",
)
async def upload_model(request: Request, storage: StorageDep, settings: SettingsDep) -> ModelInfo:
    received = await _receive_one(request, storage, settings.max_upload_bytes)
    return await run_in_threadpool(store_model, received, storage)


@router.get("/models/{model_id}", response_model=ModelInfo, responses=problems(404))
def get_model(model_id: str, storage: StorageDep) -> ModelInfo:
    return storage.model_info(model_id)


@router.post(
    "/datasets",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetInfo,
    openapi_extra=_UPLOAD_BODY,
    responses=problems(413, 422),
    summary="Upload a dataset (.npz)",
)
async def upload_dataset(
    request: Request, storage: StorageDep, settings: SettingsDep
) -> DatasetInfo:
    received = await _receive_one(request, storage, settings.max_upload_bytes)
    return await run_in_threadpool(store_dataset, received, storage)


@router.get("/datasets/{dataset_id}", response_model=DatasetInfo, responses=problems(404))
def get_dataset(dataset_id: str, storage: StorageDep) -> DatasetInfo:
    return storage.dataset_info(dataset_id)


@router.get("/custom-objects", response_model=list[CustomObjectInfo])
def custom_objects(settings: SettingsDep) -> list[CustomObjectInfo]:
    return listing(settings.plugins)
