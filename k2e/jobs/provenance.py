"""How a job was made (``Job.provenance``): its inputs' digests and its seeds, recorded at
submission; and a rerun's check that those inputs are still there, unchanged.

Seeds the user gave none of are chosen here, once: the worker runs the job with them
(``seeded``) and a rerun submits them explicitly, so both draw the same numbers.
"""

import hashlib
import json
import secrets
from pathlib import Path

from sqlalchemy import Engine, update

from k2e.errors import Conflict, FieldError, InvalidSpec, NotFound
from k2e.plan_schemas import Provenance, Seeds
from k2e.schemas import ConvertRequest, RunConfigSpec
from k2e.spec.checks import model_path
from k2e.storage import Storage, file_sha256, is_upload_id
from k2e.tables import jobs

# Seeds fit TensorFlow's int64 and every client's int32.
_SEED_RANGE = 2**31 - 1


def chosen_seeds(spec: ConvertRequest) -> Seeds:
    """The spec's seeds, each one it leaves unset chosen at random."""
    given = spec.config.tf_random_seed if spec.config is not None else None
    shuffle = spec.train.shuffle_seed if spec.train is not None else None
    return Seeds(
        tf_random_seed=given if given is not None else secrets.randbelow(_SEED_RANGE),
        shuffle_seed=(shuffle if shuffle is not None else secrets.randbelow(_SEED_RANGE))
        if spec.train is not None
        else None,
    )


def seeded(spec: ConvertRequest, seeds: Seeds) -> ConvertRequest:
    """``spec`` with ``seeds`` where it has none: what the job runs, and what a rerun submits."""
    config = spec.config or RunConfigSpec()
    if config.tf_random_seed is None and seeds.tf_random_seed is not None:
        config = config.model_copy(update={"tf_random_seed": seeds.tf_random_seed})
    update: dict[str, object] = {"config": config}
    if spec.train is not None and spec.train.shuffle_seed is None:
        if seeds.shuffle_seed is not None:
            update["train"] = spec.train.model_copy(update={"shuffle_seed": seeds.shuffle_seed})
    return spec.model_copy(update=update)


def inline_sha256(spec: ConvertRequest) -> str:
    """An inline model's digest: of its config and compile arguments as canonical JSON."""
    assert spec.keras_model is not None
    body = json.dumps(spec.keras_model.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def submitted(spec: ConvertRequest, storage: Storage) -> Provenance:
    """The provenance of a job accepted for ``spec`` (``storage``: the tenant's view):
    the digests its uploads recorded, a path's file hashed now, the seeds."""
    if spec.keras_model is not None:
        model = inline_sha256(spec)
    else:
        assert spec.keras_model_path is not None
        if is_upload_id(spec.keras_model_path):
            model = storage.model_info(spec.keras_model_path).sha256
        else:
            model = _file_digest(storage, model_path(spec.keras_model_path, storage))
    datasets = {}
    for section in (spec.train, spec.eval):
        if section is not None:
            info = storage.dataset_info(section.dataset)
            datasets[section.dataset] = info.sha256 or _file_digest(
                storage, storage.dataset_file(section.dataset)
            )
    return Provenance(
        model_sha256=model,
        datasets=datasets,
        seeds=chosen_seeds(spec),
        deterministic=False,  # true once a worker has run it so (worker/determinism.py)
    )


def check_inputs(spec: ConvertRequest, recorded: Provenance, storage: Storage) -> None:
    """A rerun's inputs are the job's: each still there (else 422, naming the field) with
    the digest recorded (else 409, naming both digests)."""
    if spec.keras_model is not None:
        _same("the inline model", inline_sha256(spec), recorded.model_sha256)
    else:
        assert spec.keras_model_path is not None
        path = model_path(spec.keras_model_path, storage)  # gone: InvalidSpec (422)
        what = f"model {spec.keras_model_path}"
        _same(what, _file_digest(storage, path), recorded.model_sha256)
    for loc, section in (("train", spec.train), ("eval", spec.eval)):
        if section is None:
            continue
        try:
            path = storage.dataset_file(section.dataset)
        except NotFound as exc:
            msg = f"dataset {section.dataset} of the job is gone: {exc.detail}"
            raise InvalidSpec(msg, [FieldError((loc, "dataset"), msg)]) from None
        want = recorded.datasets.get(section.dataset)
        if want is not None:
            _same(f"dataset {section.dataset}", _file_digest(storage, path), want)


def _same(what: str, now: str, recorded: str) -> None:
    if now != recorded:
        raise Conflict(
            f"{what} changed since the job ran: its sha256 is {now}, the job recorded "
            f"{recorded}; a rerun would not have the same inputs"
        )


def _file_digest(storage: Storage, path: Path) -> str:
    with storage.local_copy(path) as local:
        return file_sha256(local)


def record_run(engine: Engine, job_id: str, owner: str, provenance: Provenance) -> bool:
    """Write the provenance of the attempt ``owner`` runs; False when it lost the lease."""
    with engine.begin() as conn:
        result = conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
            .values(provenance=provenance.model_dump(mode="json"))
        )
    return result.rowcount == 1
