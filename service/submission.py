"""POST /convert's work: one ``accept`` path for JSON and multipart submissions.

Hash the body (spec and files), replay an Idempotency-Key, keep the uploaded files,
check the spec, plan the model_dir, record the job, send it. A refused submission keeps
nothing it uploaded.
"""

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from k2e.errors import Conflict, FieldError, InvalidSpec, Unavailable
from k2e.jobs.queueing import TaskSender, queue_for
from k2e.jobs.store import JobStore
from k2e.schemas import ConvertRequest, Job
from k2e.settings import Settings
from k2e.spec.checks import check_spec
from k2e.storage import Storage
from service.multipart import ReceivedFile
from service.uploads import sha256_of, store_dataset, store_model


class Replayed(Exception):
    """A submission lost a race on its Idempotency-Key: ``job`` is the winner's."""

    def __init__(self, job: Job) -> None:
        super().__init__(job.id)
        self.job = job


@dataclass(frozen=True)
class Backend:
    """What accepting a job touches."""

    store: JobStore
    storage: Storage
    sender: TaskSender
    settings: Settings


def parse_json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSpec(f"{what} is not valid JSON: {exc}") from None


def parse_spec(raw: Any) -> ConvertRequest:
    """A ConvertRequest, or the 422 of its schema's rules (pydantic's errors, each with loc)."""
    if not isinstance(raw, dict):
        raise RequestValidationError(
            [{"loc": (), "msg": "the spec must be a JSON object", "type": "type_error"}]
        )
    try:
        return ConvertRequest.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def accept(
    raw: Any,
    files: dict[str, ReceivedFile],
    idempotency_key: str | None,
    backend: Backend,
) -> Job:
    """Accept a submission: ``raw`` is the parsed JSON spec, ``files`` the multipart files
    (``model``, ``train_data``, ``eval_data``) already on the storage volume."""
    if not isinstance(raw, dict):
        parse_spec(raw)
    file_hashes = {field: sha256_of(received.path) for field, received in files.items()}
    body_hash = request_hash(raw, file_hashes)
    previous = replay(backend.store, idempotency_key, body_hash)
    if previous is not None:
        return previous
    created: dict[str, list[str]] = {"models": [], "datasets": []}
    try:
        ids: dict[str, str] = {}
        for field, received in files.items():
            if field == "model":
                ids[field] = store_model(received, backend.storage, backend.settings).id
                created["models"].append(ids[field])
            else:
                ids[field] = store_dataset(received, backend.storage).id
                created["datasets"].append(ids[field])
        spec = parse_spec(inject_uploads(raw, ids))
        return submit(spec, backend, idempotency_key, body_hash)
    except Replayed as replayed:
        # Another request with the key won the race: its job answers, our copies go.
        for kind, entry_ids in created.items():
            remove_entries(backend.storage, kind, entry_ids)
        return replayed.job
    except Exception:
        for kind, entry_ids in created.items():
            remove_entries(backend.storage, kind, entry_ids)
        raise


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
    backend: Backend,
    idempotency_key: str | None = None,
    body_hash: str | None = None,
) -> Job:
    """Check the spec, record the job, send it. Raises Replayed when a request with the
    same Idempotency-Key recorded its job first."""
    store = backend.store
    check_spec(spec, backend.storage, backend.settings, reinspect=False)
    job_id = str(uuid.uuid4())
    model_dir, warm_start_from = plan_model_dir(spec, backend.storage, job_id)
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
        raise Replayed(existing) from None
    try:
        backend.sender.send_train(job_id, queue, job.timeout_s)
    except Unavailable:
        # Not accepted, so not kept: the client got a 503 and nothing waits in the store.
        store.discard(job_id)
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
