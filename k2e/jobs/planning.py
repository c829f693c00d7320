"""A job planned from an accepted spec: its id, model_dir, warm start, queue, run-time
limit, the named model_dir's lock and the uploads it uses: the record the job store
keeps (NewJob).

The spec has passed its rules (k2e.spec.checks.check_spec) before; what is refused here
needs the tenant's folder or job store: a named model_dir that already holds a run
without ``warm_start``, a fine-tuning source without checkpoints.
"""

import uuid
from pathlib import Path

from k2e.errors import FieldError, InvalidSpec
from k2e.jobs.job_store import JobStore, NewJob
from k2e.jobs.queueing import queue_for
from k2e.schemas import ConvertRequest
from k2e.storage import Storage, is_upload_id
from k2e.tenancy.bodies import EffectiveQuotas
from k2e.tenancy.scope import Scope


def plan_job(
    spec: ConvertRequest,
    store: JobStore,
    storage: Storage,
    tenant: str,
    quotas: EffectiveQuotas,
    idempotency_key: str | None = None,
    body_hash: str | None = None,
) -> NewJob:
    """The record of a new job for ``spec`` (``storage`` is the tenant's view)."""
    job_id = str(uuid.uuid4())
    model_dir, reused = plan_model_dir(spec, storage, job_id)
    warm_start_from = plan_warm_start(spec, store, storage, tenant, reused)
    name = spec.effective_model_dir()
    return NewJob(
        id=job_id,
        tenant=tenant,
        spec=spec.model_dump(mode="json"),
        queue=queue_for(spec.accelerator),
        model_dir=storage.relative(model_dir),
        max_steps=spec.train.max_steps if spec.train is not None else None,
        warm_start_from=warm_start_from,
        timeout_s=run_time_limit(spec, quotas),
        idempotency_key=idempotency_key,
        request_hash=body_hash,
        dir_lock=f"{tenant}:{name}" if name is not None else None,
        uploads=upload_ids(spec, storage),
    )


def run_time_limit(spec: ConvertRequest, quotas: EffectiveQuotas) -> int:
    """The job's run-time limit: the spec's ``timeout_s``, capped by the tenant's
    ``max_run_s``."""
    if spec.timeout_s is None:
        return quotas.max_run_s
    return min(spec.timeout_s, quotas.max_run_s)


def plan_model_dir(spec: ConvertRequest, storage: Storage, job_id: str) -> tuple[Path, str | None]:
    """The job's model_dir, and the folder it warm-starts from when it reuses one."""
    name = spec.effective_model_dir()
    if name is None:
        return storage.job_model_dir(job_id), None
    folder = storage.named_model_dir(name)
    used = storage.holds_files(folder)
    if used and not spec.warm_start:
        msg = (
            f"model_dir {name!r} already holds a run; reusing it warm-starts from its "
            "checkpoints, so it must be explicit: set `warm_start: true`, or pick a new name"
        )
        loc = ("model_dir",) if spec.model_dir is not None else ("config", "model_dir")
        raise InvalidSpec(msg, [FieldError(loc, msg)])
    return folder, (storage.relative(folder) if used else None)


def plan_warm_start(
    spec: ConvertRequest, store: JobStore, storage: Storage, tenant: str, reused: str | None
) -> str | None:
    """The checkpoint a fine-tuning job starts from: its source job's newest, relative to
    the tenant's folder. Another tenant's job is not found (404), as an unknown one is."""
    if spec.warm_start_from is None:
        return reused
    loc = ("warm_start_from", "job")
    source_id = spec.warm_start_from.job
    if reused is not None:
        msg = (
            f"model_dir {spec.effective_model_dir()!r} already holds a run to warm-start from; "
            "`warm_start_from` needs a fresh model_dir"
        )
        raise InvalidSpec(msg, [FieldError(loc, msg)])
    source = store.get(source_id, Scope.of(tenant))  # NotFound: 404
    folder = storage.resolve(source.model_dir)
    checkpoints = storage.stored_checkpoints(folder)
    if not checkpoints:
        msg = f"job {source.id} ({source.status.value}) has no checkpoint to start from"
        raise InvalidSpec(msg, [FieldError(loc, msg)])
    return storage.relative(folder / checkpoints[-1].name)


def upload_ids(spec: ConvertRequest, storage: Storage) -> tuple[str, ...]:
    """The ids of the uploads a spec uses (what DELETE /models|/datasets checks): a model
    named by a path into its upload folder (``models/<id>/model.h5``) counts as its id."""
    ids = [spec.train.dataset] if spec.train else []
    ids += [spec.eval.dataset] if spec.eval else []
    path = spec.keras_model_path
    if path is not None and is_upload_id(path):
        ids.append(path)
    elif path is not None:
        model_id = model_under(storage, path)
        ids += [model_id] if model_id is not None else []
    return tuple(dict.fromkeys(ids))


def model_under(storage: Storage, path: str) -> str | None:
    """The upload whose folder ``path`` (checked by check_spec) leads into, through any
    `.`, repeated `/` or symlink."""
    models = (storage.root / "models").resolve()
    try:
        relative = storage.resolve_under_root(path, "keras_model_path").relative_to(models)
    except (ValueError, InvalidSpec, OSError):
        return None
    first = relative.parts[0] if relative.parts else ""
    return first if is_upload_id(first) else None
