"""Uploads: check a received file's format, inspect it (models in the sandbox), keep it.

A file is received into tmp/ on this machine (hashed as it arrives) and inspected there.
A refused file is removed; a kept one goes into the store (moved on the local folder, put
into the bucket on bucket storage) with its info.json last. On bucket storage a file of
more than one part goes on into the bucket while it arrives (k2e.blob_upload), at its
final key but invisible until the upload is accepted; a refused one is aborted there.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from k2e.catalog import Kind
from k2e.errors import InvalidUpload
from k2e.formats.read_limits import ReadLimits
from k2e.schemas import DatasetInfo, ModelInfo
from k2e.storage import new_id
from k2e.tenancy.scope import Scope
from k2e.vetting.sandbox import (
    SandboxLimits,
    inspect_dataset_file,
    inspect_model_file,
    policy_for,
)
from k2e.vetting.selfcheck import sandbox_check
from service.backend import Backend
from service.multipart import ReceivedFile, receive_multipart

MODEL_SUFFIXES = {".h5": "h5", ".hdf5": "h5", ".keras": "keras"}
# The name of the kept file in an upload's folder, before its format's suffix.
FILE_NAME: dict[Kind, str] = {"model": "model", "dataset": "data"}
DATASET_SUFFIXES = {
    ".npz": "npz",
    ".csv": "csv",
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
    ".tfrecord.gz": "tfrecord",
    ".tfrecords.gz": "tfrecord",
}


SUFFIXES: dict[Kind, dict[str, str]] = {"model": MODEL_SUFFIXES, "dataset": DATASET_SUFFIXES}


async def receive_one(
    request: Request, backend: Backend, tenant: str, kind: Kind | None = None
) -> ReceivedFile:
    """The request's ``file`` part, received; on bucket storage (``kind`` given) sent on
    into the bucket as it arrives."""
    limit, limit_name = await run_in_threadpool(backend.upload_limit, tenant)
    outlet = None if kind is None else stream_to_bucket(backend, tenant, kind)
    body = await receive_multipart(
        request, backend.storage.tmp_path, {"file"}, limit, limit_name, outlet_for=outlet
    )
    if "file" not in body.files:
        body.discard()
        raise InvalidUpload("the multipart body has no `file` part")
    received = body.files["file"]
    if received.size == 0:
        body.discard()
        raise InvalidUpload("the uploaded file is empty")
    return received


def stream_to_bucket(
    backend: Backend, tenant: str, kind: Kind
) -> Callable[[ReceivedFile], None] | None:
    """On bucket storage, what gives a received ``kind`` file its outlet: a multipart
    upload to the key it will have if it is kept (its id chosen now). None on the local
    folder, where the received file is moved into place."""
    storage = backend.storage.for_tenant(tenant)
    if storage.local:
        return None

    def outlet_for(received: ReceivedFile) -> None:
        from k2e.blob_upload import StreamedPut
        from k2e.blobstore_s3 import S3BlobStore

        fmt = suffix_format(received.filename, SUFFIXES[kind])
        if fmt is None or not isinstance(storage.blobs, S3BlobStore):
            return  # refused after receipt, or a store without multipart uploads
        received.entry_id = new_id()
        target = storage.root / f"{kind}s" / received.entry_id / f"{FILE_NAME[kind]}.{fmt}"
        received.outlet = StreamedPut(storage.blobs, storage.key(target), received.path)

    return outlet_for


def suffix_format(filename: str, suffixes: dict[str, str]) -> str | None:
    name = filename.lower()
    # Longest suffix first: "x.tfrecord.gz" is a TFRecord, not a bare ".gz".
    return next(
        (suffixes[s] for s in sorted(suffixes, key=len, reverse=True) if name.endswith(s)), None
    )


def format_of(received: ReceivedFile, suffixes: dict[str, str]) -> str:
    fmt = suffix_format(received.filename, suffixes)
    if fmt is None:
        received.abandon()
        raise InvalidUpload(
            f"{received.filename!r}: expected a file ending in one of {sorted(suffixes)}"
        )
    return fmt


def require_sandbox(backend: Backend) -> None:
    """503 saying what is wrong when the API's start-up check found that no upload can be
    inspected on this server (k2e.vetting.selfcheck), rather than a 422 blaming the file."""
    limits = SandboxLimits.from_settings(backend.settings)
    sandbox_check(backend.storage.base / "tmp", limits).require()


def store_model(received: ReceivedFile, backend: Backend, tenant: str) -> ModelInfo:
    """Inspect an uploaded model (HDF5 or ``.keras``) and keep it; a refused file is removed.

    The file is vetted and inspected in a child process with resource limits (k2e.vetting.sandbox):
    a hostile file is refused (422) and cannot take the API down.
    """
    settings = backend.settings
    fmt = format_of(received, MODEL_SUFFIXES)
    try:
        require_sandbox(backend)
        with held_quota(received, backend, tenant) as reservation:
            summary = inspect_model_file(
                received.path,
                fmt,
                policy_for(settings, defer_custom=True),
                SandboxLimits.from_settings(settings),
            )
            info = ModelInfo(
                id=received.entry_id or new_id(),
                format=fmt,
                inputs=summary.summary.inputs,
                outputs=summary.summary.outputs,
                compiled=summary.compiled,
                metric_names=summary.metric_names,
                sha256=received.sha256,
                size=received.size,
                model_class=summary.summary.model_class,
                custom_names=summary.custom_names,
            )
            # The whole inspection, so that POST /convert need not inspect the file again.
            keep(
                backend,
                tenant,
                "model",
                info,
                received,
                reservation,
                summary.model_dump(mode="json"),
            )
            return info
    finally:
        received.abandon()


def store_dataset(received: ReceivedFile, backend: Backend, tenant: str) -> DatasetInfo:
    """Inspect an uploaded dataset (npz, CSV, TFRecord) and keep it; a refused file is removed.

    The API process never parses the file: the sandbox's child does (k2e.vetting.sandbox),
    with the readers' bounds (``K2E_MAX_RECORD_BYTES``, ``K2E_MAX_INFLATED_BYTES``…) and the
    child's CPU, memory and time limits, so a file that lies about its sizes is a 422 and
    the API's memory stays flat.
    """
    settings = backend.settings
    fmt = format_of(received, DATASET_SUFFIXES)
    try:
        require_sandbox(backend)
        with held_quota(received, backend, tenant) as reservation:
            summary = inspect_dataset_file(
                received.path,
                fmt,
                ReadLimits.from_settings(settings),
                SandboxLimits.from_settings(settings),
            )
            info = DatasetInfo(
                id=received.entry_id or new_id(),
                format=fmt,
                num_examples=summary.num_examples,
                arrays=summary.arrays,
                dtypes=summary.dtypes,
                sha256=received.sha256,
                size=received.size,
            )
            keep(backend, tenant, "dataset", info, received, reservation)
            return info
    finally:
        received.abandon()


@contextmanager
def held_quota(received: ReceivedFile, backend: Backend, tenant: str) -> Iterator[int]:
    """The file's bytes held against the tenant's storage quota while it is inspected
    (413 when they do not fit, however many uploads race); given back if it is refused.
    Keeping the file (``keep``) turns the reservation into the upload's own row."""
    reservation = backend.tenants.reserve_bytes(tenant, received.size, received.field)
    try:
        yield reservation
    except BaseException:
        backend.tenants.release_bytes(reservation)
        raise


def keep(
    backend: Backend,
    tenant: str,
    kind: Kind,
    info: ModelInfo | DatasetInfo,
    received: ReceivedFile,
    reservation: int,
    summary: dict | None = None,
) -> None:
    """Move an inspected file into place and record it; if that fails, none of it stays.
    A file streamed into the bucket is committed there (it appears at its key whole)."""
    storage = backend.storage.for_tenant(tenant)
    folder = storage.root / f"{kind}s" / info.id
    try:
        if summary is not None:
            storage.write_summary(info.id, summary)
        outlet = received.outlet
        streamed = outlet is not None and outlet.started
        if outlet is not None and streamed:
            outlet.commit()
        storage.save_entry(
            f"{kind}s",
            info.id,
            None if streamed else received.path,
            f"{FILE_NAME[kind]}.{info.format}",
            info,
        )
        backend.catalog.add(kind, tenant, info, reservation)
    except BaseException:
        storage.remove_tree(folder)
        raise


def delete_upload(kind: Kind, upload_id: str, backend: Backend, scope: Scope) -> None:
    """Forget an upload and remove its files (Conflict while a job that has not ended
    uses it); one outside ``scope`` is not found (``ANY_TENANT``: admins)."""
    owner = backend.catalog.owner(kind, upload_id)
    backend.catalog.remove(kind, upload_id, scope)
    if owner is not None:
        storage = backend.storage.for_tenant(owner)
        storage.remove_tree(storage.root / f"{kind}s" / upload_id)
