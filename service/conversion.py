"""POST /convert's logic: check the spec, plan the model_dir, record the job, send it."""

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from k2e.errors import Conflict, FieldError, InvalidSpec, Unavailable
from k2e.jobstore import JobStore
from k2e.queueing import train_task_options
from k2e.schemas import ConvertRequest, Job
from k2e.settings import Settings
from k2e.storage import Storage
from k2e.tasks import queue_for
from k2e.validation import check_spec
from service.broker import TaskSender


def plan_model_dir(spec: ConvertRequest, storage: Storage, job_id: str) -> tuple[Path, str | None]:
    """The job's model_dir, and the folder it warm-starts from when it reuses one."""
    name = spec.effective_model_dir()
    if name is None:
        return storage.job_model_dir(job_id), None
    folder = storage.named_model_dir(name)
    used = folder.is_dir() and any(folder.iterdir())
    if used and not spec.warm_start:
        msg = (
            f"model_dir {name!r} already holds a run; reusing it warm-starts from its "
            "checkpoints, so it must be explicit: set `warm_start: true`, or pick a new name"
        )
        loc = ("model_dir",) if spec.model_dir is not None else ("config", "model_dir")
        raise InvalidSpec(msg, [FieldError(loc, msg)])
    return folder, (str(folder) if used else None)


def request_hash(spec: object, files: dict[str, str] | None = None) -> str:
    """What makes two submissions "the same body": the spec and the uploaded files' hashes."""
    canonical = json.dumps({"spec": spec, "files": files or {}}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(store: JobStore, key: str | None, body_hash: str) -> Job | None:
    """The job an Idempotency-Key already made; Conflict when the body differs."""
    if key is None:
        return None
    found = store.by_idempotency_key(key)
    if found is None:
        return None
    job, known_hash = found
    if known_hash != body_hash:
        raise Conflict(
            f"Idempotency-Key {key!r} was used with a different request body (job {job.id})"
        )
    return job


def submit(
    spec: ConvertRequest,
    store: JobStore,
    storage: Storage,
    sender: TaskSender,
    settings: Settings,
    idempotency_key: str | None = None,
    body_hash: str | None = None,
) -> Job:
    check_spec(spec, storage, settings, reinspect=False)
    job_id = str(uuid.uuid4())
    model_dir, warm_start_from = plan_model_dir(spec, storage, job_id)
    queue = queue_for(spec.accelerator)
    # The record exists before the task is sent: a worker never sees an unknown job.
    try:
        job = store.create(
            job_id,
            spec.model_dump(mode="json"),
            queue,
            str(model_dir),
            spec.train.max_steps,
            warm_start_from,
            timeout_s=spec.timeout_s,
            idempotency_key=idempotency_key,
            request_hash=body_hash,
        )
    except Conflict:
        # Two requests raced with one key: the first one's job answers both.
        existing = replay(store, idempotency_key, body_hash or "")
        if existing is None:
            raise
        return existing
    options = train_task_options(job_id, queue, spec.timeout_s, settings.timeout_grace_s)
    try:
        sender.send_train(job_id, options)
    except Unavailable:
        # Not accepted, so not kept: the client got a 503 and nothing waits in the store.
        store.delete(job_id)
        raise
    return job


def inject_uploads(raw: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """Point the spec at files uploaded with it: `model` counts as keras_model_path."""
    spec = dict(raw)
    if "model" in ids:
        if spec.get("keras_model_path") is not None:
            msg = "both an uploaded `model` file and `keras_model_path` were given"
            raise InvalidSpec(msg, [FieldError(("keras_model_path",), msg)])
        spec["keras_model_path"] = ids["model"]
    for field, section in (("train_data", "train"), ("eval_data", "eval")):
        if field in ids:
            part = spec.get(section)
            if part is not None and not isinstance(part, dict):
                continue  # left for the schema to refuse
            spec[section] = {**(part or {}), "dataset": ids[field]}
    return spec


def remove_entries(storage: Storage, kind: str, ids: list[str]) -> None:
    for entry_id in ids:
        shutil.rmtree(storage.root / kind / entry_id, ignore_errors=True)
