"""POST /convert's logic: check the spec, plan the model_dir, record the job, send it."""

import shutil
import uuid
from pathlib import Path
from typing import Any

from k2e.errors import FieldError, InvalidSpec, Unavailable
from k2e.jobstore import JobStore
from k2e.schemas import ConvertRequest, Job, JobStatus
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


def submit(
    spec: ConvertRequest,
    store: JobStore,
    storage: Storage,
    sender: TaskSender,
    settings: Settings,
) -> Job:
    check_spec(spec, storage, settings.plugins)
    job_id = str(uuid.uuid4())
    model_dir, warm_start_from = plan_model_dir(spec, storage, job_id)
    queue = queue_for(spec.accelerator)
    # The record exists before the task is sent: a worker never sees an unknown job.
    job = store.create(
        job_id,
        spec.model_dump(mode="json"),
        queue,
        str(model_dir),
        spec.train.max_steps,
        warm_start_from,
    )
    try:
        sender.send_train(job_id, queue)
    except Unavailable as exc:
        store.finish(
            job_id,
            JobStatus.failed,
            error={"type": "BrokerUnavailable", "message": exc.detail, "reason": "error"},
        )
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
