"""Model and dataset uploads, and the custom-object registry."""

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool

from k2e.csvdata import inspect_csv
from k2e.custom_objects import listing
from k2e.errors import InvalidUpload
from k2e.examples import inspect_tfrecord
from k2e.npz import inspect_npz
from k2e.sandbox import SandboxLimits, inspect_model_file, policy_for, summary_to_json
from k2e.schemas import CustomObjectInfo, DatasetInfo, ModelInfo
from k2e.settings import Settings, get_settings
from k2e.storage import Storage, new_id
from service.deps import SettingsDep, StorageDep
from service.multipart import ReceivedFile, receive_multipart
from service.problems import problems

router = APIRouter(tags=["uploads"])

MODEL_SUFFIXES = {".h5": "h5", ".hdf5": "h5", ".keras": "keras"}
DATASET_SUFFIXES = {
    ".npz": "npz",
    ".csv": "csv",
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
    ".tfrecord.gz": "tfrecord",
    ".tfrecords.gz": "tfrecord",
}
DATASET_INSPECTORS: dict[str, Callable[[Path], Any]] = {
    "npz": inspect_npz,
    "csv": inspect_csv,
    "tfrecord": inspect_tfrecord,
}

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
    name = received.filename.lower()
    # Longest suffix first: "x.tfrecord.gz" is a TFRecord, not a bare ".gz".
    fmt = next(
        (suffixes[s] for s in sorted(suffixes, key=len, reverse=True) if name.endswith(s)), None
    )
    if fmt is None:
        received.path.unlink(missing_ok=True)
        raise InvalidUpload(
            f"{received.filename!r}: expected a file ending in one of {sorted(suffixes)}"
        )
    return fmt


def store_model(
    received: ReceivedFile, storage: Storage, settings: Settings | None = None
) -> ModelInfo:
    """Inspect an uploaded model (HDF5 or ``.keras``) and keep it; a refused file is removed.

    The file is vetted and inspected in a child process with resource limits (k2e.sandbox):
    a hostile file is refused (422) and cannot take the API down. ``settings`` default to
    the process's.
    """
    settings = settings or get_settings()
    fmt = _format_of(received, MODEL_SUFFIXES)
    try:
        summary = inspect_model_file(
            received.path, fmt, policy_for(settings), SandboxLimits.from_settings(settings)
        )
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
        # The whole inspection, so that POST /convert need not inspect the file again.
        storage.write_summary(info.id, summary_to_json(summary))
        storage.save_entry("models", info.id, received.path, f"model.{fmt}", info)
        return info
    finally:
        received.path.unlink(missing_ok=True)


def store_dataset(received: ReceivedFile, storage: Storage) -> DatasetInfo:
    fmt = _format_of(received, DATASET_SUFFIXES)
    try:
        summary = DATASET_INSPECTORS[fmt](received.path)
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
    summary="Upload a compiled Keras model (HDF5 or .keras)",
)
async def upload_model(request: Request, storage: StorageDep, settings: SettingsDep) -> ModelInfo:
    received = await _receive_one(request, storage, settings.max_upload_bytes)
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
    received = await _receive_one(request, storage, settings.max_upload_bytes)
    return await run_in_threadpool(store_dataset, received, storage)


@router.get("/datasets/{dataset_id}", response_model=DatasetInfo, responses=problems(404))
def get_dataset(dataset_id: str, storage: StorageDep) -> DatasetInfo:
    return storage.dataset_info(dataset_id)


@router.get("/custom-objects", response_model=list[CustomObjectInfo])
def custom_objects(settings: SettingsDep) -> list[CustomObjectInfo]:
    return listing(settings.plugins)
