"""The work behind the job routes: a job's files, deletion, and what its log shows.

A job's files are read through the storage's BlobStore: on the local folder, the
model_dir's files themselves; on bucket storage, the objects under its key, streamed
from the bucket (or handed out as presigned URLs).
"""

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from k2e.cluster_schemas import Cluster
from k2e.errors import Conflict, K2EError, NotFound, Unavailable
from k2e.jobs.planning import model_under
from k2e.jobs.records import JobRecord
from k2e.queue_schemas import QueuePlace
from k2e.schemas import CheckpointInfo, Job, JobEvent, JobLog, JobStatus, TensorInfo
from k2e.storage import EXPORT_DIR, Storage, is_upload_id
from k2e.tenancy.bodies import DEFAULT_TENANT, Caller
from k2e.tenancy.scope import Scope
from k2e.vetting.model_config import parse_model_config
from service.archive import Stored, tree_members
from service.auth import scope
from service.backend import Backend
from service.redaction import member_text

Member = tuple[Path | Stored, str]


def model_dir_of(backend: Backend, job_id: str, caller: Caller) -> tuple[JobRecord, Path]:
    """The job (another tenant's is not found) and its model_dir's path in the layout."""
    job = backend.store.get(job_id, scope(caller))
    storage = backend.storage.for_tenant(job.tenant or caller.tenant)
    return job, storage.resolve(job.model_dir)


def _export(backend: Backend, model_dir: Path) -> tuple[str, list[Member]] | None:
    """The newest export's version and its files as archive members (``<version>/...``)."""
    storage = backend.storage
    if storage.local:
        export = Storage.latest_export(model_dir)
        if export is None:
            return None
        local: list[Member] = [*tree_members(export, export.name)]
        return export.name, local
    found = storage.stored_export(model_dir)
    if found is None:
        return None
    version, infos = found
    prefix = storage.folder_key(model_dir / EXPORT_DIR)
    members: list[Member] = [
        (Stored(storage.blobs, i.key, i.size, i.mtime), i.key[len(prefix) :]) for i in infos
    ]
    return version, members


def latest_export(backend: Backend, job_id: str, caller: Caller) -> tuple[str, list[Member]]:
    """The newest export's version and files; NotFound while it has none."""
    job, model_dir = model_dir_of(backend, job_id, caller)
    export = _export(backend, model_dir)
    if export is None:
        raise NotFound(f"job {job_id} has no exported SavedModel (status {job.status.value})")
    return export


def latest_export_of(backend: Backend, job_id: str, caller: Caller) -> tuple[JobRecord, str]:
    """The job and its newest export's version; Conflict while it has none."""
    job, model_dir = model_dir_of(backend, job_id, caller)
    export = _export(backend, model_dir)
    if export is None:
        raise Conflict(f"job {job_id} has no exported SavedModel yet (status {job.status.value})")
    return job, export[0]


def input_dtypes(backend: Backend, job: JobRecord) -> dict[str, str]:
    """The dtypes of the job's model's inputs, by input name, as inspection found them
    (the uploaded model's record, or an inline model's config); empty when unknown (the
    upload is gone, or the file was never uploaded)."""
    spec, tenant = job.spec, job.tenant
    inputs: list[Any] = []
    try:
        inline = spec.get("keras_model")
        path = spec.get("keras_model_path")
        if isinstance(inline, dict) and isinstance(inline.get("config"), dict):
            inputs = parse_model_config(inline["config"]).inputs
        elif isinstance(path, str) and tenant is not None:
            storage = backend.storage.for_tenant(tenant)
            model_id = path if is_upload_id(path) else model_under(storage, path)
            if model_id is not None:
                info = backend.catalog.info("model", model_id, Scope.of(tenant))
                inputs = [TensorInfo.model_validate(entry) for entry in info["inputs"]]
    except (K2EError, ValueError, KeyError, TypeError):
        return {}
    return {tensor.name: tensor.dtype for tensor in inputs}


def checkpoints(backend: Backend, job_id: str, caller: Caller) -> list[CheckpointInfo]:
    return backend.storage.stored_checkpoints(model_dir_of(backend, job_id, caller)[1])


def checkpoint_files(backend: Backend, job_id: str, step: int, caller: Caller) -> list[Member]:
    """The checkpoint's files as archive members (their own names)."""
    model_dir = model_dir_of(backend, job_id, caller)[1]
    storage = backend.storage
    members: list[Member]
    if storage.local:
        files = Storage.checkpoint_files(model_dir, step) if model_dir.is_dir() else []
        members = [(f, f.name) for f in files]
    else:
        members = [
            (Stored(storage.blobs, i.key, i.size, i.mtime), i.key.rsplit("/", 1)[-1])
            for i in storage.stored_checkpoint_files(model_dir, step)
        ]
    if not members:
        raise NotFound(f"job {job_id} has no checkpoint at step {step}")
    return members


@contextmanager
def event_files(backend: Backend, model_dir: Path) -> Iterator[Path]:
    """A local folder holding the model_dir's TensorBoard event files: the model_dir
    itself on the local folder; on bucket storage, a copy of those objects only, fetched
    into tmp/ and removed when the block ends."""
    storage = backend.storage
    if storage.local:
        yield model_dir
        return
    prefix = storage.folder_key(model_dir)
    local = storage.tmp_path(".events")
    try:
        for info in storage.blobs.list(prefix):
            relative = info.key[len(prefix) :]
            if "events.out.tfevents." in relative.rsplit("/", 1)[-1]:
                storage.blobs.get_file(info.key, local / relative)
        yield local
    finally:
        shutil.rmtree(local, ignore_errors=True)


def delete_job(backend: Backend, job_id: str, caller: Caller) -> None:
    """Forget a finished job and remove its files: its own model_dir, or a named one that
    no other job's record uses (Conflict while the job has not ended)."""
    job = backend.store.delete_finished(job_id, scope(caller))
    tenant = job.tenant or caller.tenant
    if not backend.store.jobs_using_model_dir(job.model_dir, tenant):
        storage = backend.storage.for_tenant(tenant)
        storage.remove_tree(storage.resolve(job.model_dir))


def message_filter(backend: Backend, job: JobRecord, caller: Caller) -> Callable[[str], str]:
    """How the caller sees the job's status and log messages. TensorFlow's own lines name
    the model_dir in full: members see it relative to their tenant's folder, no other
    server path, no traceback (service/redaction.py), nor the host and pid of the worker
    that started the job. Admins see them as written."""
    if caller.is_admin:
        return _as_is
    roots = _roots(backend, job.tenant or caller.tenant)
    return lambda message: member_text(message, roots)


def _roots(backend: Backend, tenant: str) -> tuple[str, ...]:
    base = backend.storage.base
    return (f"{Storage(base, tenant).root}/", f"{base}/")


def member_view(backend: Backend) -> Callable[[Job], Job]:
    """The job as a member sees it: its error's type, message and reason, the message
    without traceback or server paths (as message_filter shows its log)."""

    def view(job: Job) -> Job:
        if job.error is None:
            return job
        roots = _roots(backend, job.tenant or DEFAULT_TENANT)
        error = job.error.model_copy(update={"message": member_text(job.error.message, roots)})
        return job.model_copy(update={"error": error})

    return view


def shown(
    backend: Backend,
    caller: Caller,
    record: JobRecord,
    place: QueuePlace | None = None,
    clusters: dict[str, Cluster] | None = None,
) -> Job:
    """The job's public body as ``caller`` sees it; a queued job's place and a cluster
    job's members are read unless given (a listing reads those of its page at once)."""
    if place is None and record.status is JobStatus.queued:
        place = backend.placement.place(record)
    cluster = backend.clusters.of(record) if clusters is None else clusters.get(record.id)
    job = record.public(place, cluster)
    return job if caller.is_admin else member_view(backend)(job)


def _as_is(message: str) -> str:
    return message


def job_log(backend: Backend, job_id: str, since: int, limit: int, caller: Caller) -> JobLog:
    job = backend.store.get(job_id, scope(caller))  # 404 for unknown and other tenants' jobs
    since = backend.store.resume_point(job_id, since)  # `since` from before: translated
    items = [JobEvent(**e) for e in backend.store.events(job_id, since, limit)]
    clean = message_filter(backend, job, caller)
    items = [item.model_copy(update={"message": clean(item.message)}) for item in items]
    return JobLog(items=items, next_since=items[-1].seq if items else since)


def cancel_job(backend: Backend, job_id: str, caller: Caller) -> JobRecord:
    """Cancel; a queued job's place in its tenant's turn goes to the next one waiting."""
    job = backend.store.request_cancel(job_id, scope(caller))
    _hand_over(backend, job)
    return job


def suspend_job(backend: Backend, job_id: str, caller: Caller) -> JobRecord:
    """Suspend: at once while it waits, at its next step on a worker (k2e.jobs.suspension)."""
    return backend.store.request_suspend(job_id, scope(caller))


def resume_job(backend: Backend, job_id: str, caller: Caller) -> JobRecord:
    """Resume a suspended job: queued again, and handed over when its tenant's turn allows."""
    job = backend.store.resume(job_id, scope(caller))
    _hand_over(backend, job)
    return job


def _hand_over(backend: Backend, job: JobRecord) -> None:
    """A scheduling pass after a job left or rejoined the queue; a broker that does not
    answer leaves it to the reconciler, which hands jobs over once it does."""
    if job.tenant is not None:
        try:
            backend.dispatcher.pump(Scope.of(job.tenant))
        except Unavailable:
            pass
