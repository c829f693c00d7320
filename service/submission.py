"""POST /convert's work: one ``accept`` path for JSON and multipart submissions.

Hash the body (spec and files), replay an Idempotency-Key, check the tenant's job quota,
keep the uploaded files, parse the spec, check it (k2e.spec.checks: its rules, the server's
limits and the tenant's quotas), plan the job (k2e.jobs.planning), record it, hand it to
the broker when the fairness rule allows. A refused submission keeps nothing.
"""

import dataclasses
import hashlib
import json
import logging
from typing import Any

import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from k2e import logs, tracing
from k2e.catalog import Kind
from k2e.errors import (
    Conflict,
    FieldError,
    InvalidSpec,
    K2EError,
    QuotaExceeded,
    Unavailable,
)
from k2e.jobs.gang_capacity import check_gang_fits
from k2e.jobs.job_store import JobStore
from k2e.jobs.planning import plan_job
from k2e.jobs.provenance import submitted
from k2e.jobs.queueing import queue_for
from k2e.jobs.records import JobRecord
from k2e.schemas import ConvertRequest
from k2e.spec.checks import check_spec
from k2e.spec.numbers import may_hold_unusable, unusable_numbers
from k2e.storage import file_sha256
from k2e.tenancy.quota import JobQuotaReached
from k2e.tenancy.scope import Scope
from service.backend import Backend
from service.multipart import ReceivedFile
from service.upload_intake import delete_upload, store_dataset, store_model

log = logging.getLogger("k2e.api")


class Replayed(Exception):
    """A submission lost a race on its Idempotency-Key: ``job`` is the winner's."""

    def __init__(self, job: JobRecord) -> None:
        super().__init__(job.id)
        self.job = job


_QUOTE, _BACKSLASH, _OPEN_ARRAY, _OPEN_OBJECT, _CLOSE_ARRAY, _CLOSE_OBJECT = b'"\\[{]}'
# Bytes scanned at once: bounds the scan's arrays (a few bytes per body byte) whatever
# the body's size.
_SCAN_CHUNK = 1 << 18


def json_depth(data: bytes) -> int:
    """How deep ``data``'s arrays and objects nest, counted without parsing (so a body
    nested too deep for ``json.loads``'s recursion is refused before it is parsed).

    Linear in ``len(data)`` by construction: a few vectorised passes per chunk, no
    backtracking. A quote is escaped when an odd run of backslashes precedes it; a byte
    is inside a string when an odd number of unescaped quotes comes at or before it.
    Exact for UTF-8 (no byte of a multi-byte character is ASCII); on a body that is not
    JSON the count is of its prefix up to the first error, where ``json.loads`` stops.
    """
    depth = deepest = 0
    quotes = 0  # unescaped quotes so far: odd = inside a string
    backslashes = 0  # the run of backslashes that ends the previous chunk
    for start in range(0, len(data), _SCAN_CHUNK):
        chunk = np.frombuffer(data, np.uint8, min(_SCAN_CHUNK, len(data) - start), start)
        index = np.arange(len(chunk), dtype=np.int64)
        slash = chunk == _BACKSLASH
        # The last byte at or before each position that is not a backslash (-1: none).
        last_other = np.maximum.accumulate(np.where(slash, -1, index))
        run = np.where(last_other >= 0, index - last_other, index + 1 + backslashes)
        at = np.flatnonzero(chunk == _QUOTE)
        before = np.where(at > 0, run[np.maximum(at - 1, 0)], backslashes)
        unescaped = np.zeros(len(chunk), np.int64)
        unescaped[at[before % 2 == 0]] = 1
        inside = (np.cumsum(unescaped) + quotes) % 2 == 1
        step = (chunk == _OPEN_ARRAY).astype(np.int64) + (chunk == _OPEN_OBJECT)
        step -= (chunk == _CLOSE_ARRAY).astype(np.int64) + (chunk == _CLOSE_OBJECT)
        step[inside] = 0
        levels = np.cumsum(step) + depth
        deepest = max(deepest, int(levels.max()))
        depth = int(levels[-1])
        quotes = (quotes + int(unescaped.sum())) % 2
        backslashes = int(run[-1]) if slash[-1] else 0
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(
    text: str | bytes, what: str, max_depth: int = 64, error: type[K2EError] = InvalidSpec
) -> Any:
    """Parse a JSON body: UTF-8 (RFC 8259), nested at most ``max_depth`` deep (422 beyond,
    before parsing), without NaN or Infinity (which JSON does not have) and without numbers
    k2e cannot use (k2e.spec.numbers: ``1e400``, integers beyond int64), each named by its
    location in the body. Refusals raise ``error`` (a spec's: InvalidSpec)."""
    if isinstance(text, str):
        data = text.encode("utf-8", "surrogatepass")
    else:
        data = text
        try:
            # Only UTF-8 keeps every ASCII byte (quotes, brackets) out of other
            # characters, which the depth scan relies on.
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{what} is not UTF-8: {exc}") from None
    depth = json_depth(data)
    if depth > max_depth:
        msg = f"{what} nests arrays and objects {depth} deep; the limit is {max_depth}"
        raise error(msg, [FieldError((), msg)])
    try:
        parsed = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    unusable = unusable_numbers(parsed) if may_hold_unusable(text) else []
    if unusable:
        raise error(unusable[0].msg, unusable)
    return parsed


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
    tenant: str,
) -> JobRecord:
    """Accept a submission: ``raw`` is the parsed JSON spec, ``files`` the multipart files
    (``model``, ``train_data``, ``eval_data``) already on the storage volume."""
    if not isinstance(raw, dict):
        parse_spec(raw)
    file_hashes = {field: file_sha256(received.path) for field, received in files.items()}
    body_hash = request_hash(raw, file_hashes)
    # Keys are per tenant: the same key from two tenants names two jobs.
    key = tenant_key(tenant, idempotency_key)
    previous = replay(backend.store, key, body_hash)
    if previous is not None:
        return previous
    check_job_quota(backend, tenant)
    created: dict[Kind, list[str]] = {"model": [], "dataset": []}
    try:
        ids = keep_uploads(files, backend, tenant, created)
        spec = parse_spec(inject_uploads(raw, ids))
        return submit(spec, backend, tenant, key, body_hash)
    except Replayed as replayed:
        # Another request with the key won the race: its job answers, our copies go.
        drop_uploads(created, backend, tenant)
        return replayed.job
    except Exception:
        drop_uploads(created, backend, tenant)
        raise


def keep_uploads(
    files: dict[str, ReceivedFile], backend: Backend, tenant: str, created: dict[Kind, list[str]]
) -> dict[str, str]:
    """Keep a submission's files as uploads (each id added to ``created`` as it is
    kept); their ids by field."""
    ids: dict[str, str] = {}
    for field, received in files.items():
        with tracing.span("upload", field=field):
            if field == "model":
                ids[field] = store_model(received, backend, tenant).id
                created["model"].append(ids[field])
            else:
                ids[field] = store_dataset(received, backend, tenant).id
                created["dataset"].append(ids[field])
    return ids


def drop_uploads(created: dict[Kind, list[str]], backend: Backend, tenant: str) -> None:
    for kind, entry_ids in created.items():
        for entry_id in entry_ids:
            delete_upload(kind, entry_id, backend, Scope.of(tenant))


def tenant_key(tenant: str, idempotency_key: str | None) -> str | None:
    if idempotency_key is None:
        return None
    return f"{tenant}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


def check_job_quota(backend: Backend, tenant: str) -> None:
    """429 (with Retry-After) when the tenant has its most jobs queued and running: the
    early answer, before any file is kept. ``submit`` takes the slot atomically."""
    limit = backend.tenants.quotas(tenant).max_active_jobs
    active = backend.store.active_count(tenant)
    if active >= limit:
        raise job_quota_exceeded(backend, active, limit)


def job_quota_exceeded(backend: Backend, active: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"the tenant has {active} jobs queued or running, its quota (max_active_jobs "
        f"{limit}); submit again when one has ended",
        backend.settings.quota_retry_after_s,
    )


def request_hash(spec: object, files: dict[str, str] | None = None) -> str:
    """What makes two submissions "the same body": the spec and the uploaded files' hashes."""
    canonical = json.dumps({"spec": spec, "files": files or {}}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(store: JobStore, key: str | None, body_hash: str) -> JobRecord | None:
    """The job an Idempotency-Key already made; Conflict when the body differs."""
    if key is None:
        return None
    job = store.by_idempotency_key(key)
    if job is None:
        return None
    if job.request_hash != body_hash:
        raise Conflict(f"the Idempotency-Key was used with a different request body (job {job.id})")
    return job


def submit(
    spec: ConvertRequest,
    backend: Backend,
    tenant: str,
    idempotency_key: str | None = None,
    body_hash: str | None = None,
) -> JobRecord:
    """Check the spec (k2e.spec: its rules, the server's limits, the tenant's quotas), plan
    the job (k2e.jobs.planning), record it, hand it to the broker when its tenant's turn
    allows. Raises Replayed when a request with the same Idempotency-Key recorded its job
    first."""
    store = backend.store
    storage = backend.storage.for_tenant(tenant)
    quotas = backend.tenants.quotas(tenant)
    with tracing.span("check"):
        check_spec(spec, storage, backend.settings, reinspect=False, quotas=quotas)
    # A gang larger than its queue's live workers (or the tenant's share) never starts.
    queue = queue_for(spec.accelerator)
    check_gang_fits(
        store.engine,
        spec,
        queue,
        quotas,
        backend.settings.worker_live_s,
    )
    new = plan_job(spec, store, storage, tenant, quotas, idempotency_key, body_hash)
    # The class's value now: a class an admin renumbers later leaves this job's order.
    # The digests and seeds a rerun reuses (k2e.jobs.provenance). The request's id and
    # trace go with the job: its worker's lines and spans carry them.
    new = dataclasses.replace(
        new,
        priority=backend.settings.priority_values[spec.priority],
        provenance=submitted(spec, storage).model_dump(mode="json"),
        request_id=logs.current().get("request_id"),
        trace_context=tracing.current_traceparent(),
    )
    job_id = new.id
    # The record exists before the task is sent: a worker never sees an unknown job.
    try:
        store.create(new, max_active=quotas.max_active_jobs)
    except JobQuotaReached as reached:
        # A request with the same key that got in first answers this one too.
        existing = replay(store, idempotency_key, body_hash or "")
        if existing is not None:
            raise Replayed(existing) from None
        raise job_quota_exceeded(backend, reached.active, reached.limit) from None
    except Conflict:
        # Two requests raced with one key: the first one's job answers both.
        existing = replay(store, idempotency_key, body_hash or "")
        if existing is None:
            raise
        raise Replayed(existing) from None
    with logs.bound(job_id=job_id, tenant=tenant):
        log.info("job %s: accepted for the %s queue", job_id, new.queue)
    try:
        backend.dispatcher.pump(Scope.of(tenant))
    except Unavailable:
        # Not accepted, so not kept: the client got a 503 and nothing waits in the store.
        store.discard(job_id)
        raise
    return store.get(job_id, Scope.of(tenant))


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
