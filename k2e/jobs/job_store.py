"""The durable job store k2e owns: SQLite by default, PostgreSQL via DATABASE_URL.

Job state never comes from Celery's result backend: the record is written here before
the task is sent. This class is what the API needs (create, read, list, cancel, delete);
the worker's lease-fenced writes live in :mod:`k2e.jobs.leases`, handing jobs to the
broker in :mod:`k2e.jobs.dispatch`.

Reads answer ``JobRecord``s (k2e.jobs.records): the job as stored, model_dir included;
the API makes its public ``Job`` from one. Every read by id or list takes a ``Scope``
(k2e.tenancy.scope), with no default: a member's scope is its tenant, where another
tenant's job is not found; ``ANY_TENANT`` (admins, the worker) is spelled out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from k2e.cursors import CursorCodec
from k2e.db import aware, create_schema, make_engine, utcnow
from k2e.errors import Conflict, NotFound
from k2e.jobs.event_log import END, STREAM_ONLY, EventNotifier
from k2e.jobs.records import JobRecord
from k2e.jobs.rows import BY_ID, BY_ID_AND_TENANT, TERMINAL_VALUES, add_event
from k2e.jobs.suspension import SuspendResume
from k2e.jobs.tallies import SUBMITTED, tally
from k2e.schemas import JobStatus
from k2e.tables import events, jobs
from k2e.tenancy.quota import hold_job_slot
from k2e.tenancy.scope import ANY_TENANT, Scope, tenant_of

MAX_PAGE = 200
MAX_ROW = 2**31 - 1
ACTIVE_VALUES = [JobStatus.queued.value, JobStatus.running.value, JobStatus.cancelling.value]


@dataclass(frozen=True)
class NewJob:
    """What the API records for an accepted submission."""

    id: str
    tenant: str
    spec: dict[str, Any]
    queue: str
    model_dir: str  # relative to the tenant's storage folder
    max_steps: int | None
    warm_start_from: str | None = None
    timeout_s: int | None = None
    idempotency_key: str | None = None  # already prefixed with the tenant
    request_hash: str | None = None
    dir_lock: str | None = None  # "<tenant>:<name>" for a named model_dir
    uploads: tuple[str, ...] = ()
    priority: int | None = None  # the value of its priority class (None: normal)
    provenance: dict[str, Any] | None = None  # schemas.Provenance, from its submission
    request_id: str | None = None  # the submission's X-Request-ID
    trace_context: str | None = None  # its trace's traceparent (tracing on)


@dataclass(frozen=True)
class RecordPage:
    """One page of a listing, newest first; ``next_cursor`` asks for the next one."""

    items: list[JobRecord]
    next_cursor: str | None = None


class JobStore(SuspendResume):
    """Create, read, list, cancel, suspend, resume and delete jobs.

    With a ``notifier``, every write that adds events to a job announces it after its
    commit (k2e.jobs.event_log), so that event streams read at once instead of polling.
    """

    def __init__(self, url: str, notifier: EventNotifier | None = None) -> None:
        self.engine = make_engine(url)
        self.notifier = notifier
        self.cursors = CursorCodec(self.engine)

    def _notify(self, job_id: str) -> None:
        if self.notifier is not None:
            self.notifier.notify(job_id)

    def create_schema(self) -> None:
        """Bring the store's schema to head (k2e.migrations): tables, columns, and the
        one-time fix-ups of rows older releases wrote."""
        create_schema(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # writes from the API -------------------------------------------------

    def create(self, new: NewJob, max_active: int | None = None) -> JobRecord:
        """Record a queued job (not yet handed to the broker: see k2e.jobs.dispatch).

        With ``max_active``, the tenant's active jobs are counted and the job recorded
        under its tenant's lock: JobQuotaReached when it has that many already, however
        many requests race. Raises Conflict when the idempotency key is taken or another
        active job holds the named model_dir (naming that job).
        """
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                if max_active is not None:
                    hold_job_slot(conn, new.tenant, max_active)
                conn.execute(
                    insert(jobs).values(
                        id=new.id,
                        tenant=new.tenant,
                        status=JobStatus.queued.value,
                        queue=new.queue,
                        created_at=now,
                        updated_at=now,
                        spec=new.spec,
                        progress={"global_step": 0, "max_steps": new.max_steps},
                        metrics={"train": [], "eval": {}},
                        attempts=0,
                        model_dir=new.model_dir,
                        warm_start_from=new.warm_start_from,
                        timeout_s=new.timeout_s,
                        idempotency_key=new.idempotency_key,
                        request_hash=new.request_hash,
                        dir_lock=new.dir_lock,
                        uploads=" ".join(new.uploads),
                        events_num=0,
                        priority=new.priority,
                        provenance=new.provenance,
                        request_id=new.request_id,
                        trace_context=new.trace_context,
                    )
                )
                add_event(conn, new.id, JobStatus.queued.value, f"queued on {new.queue}")
                tally(conn, SUBMITTED, new.queue)
        except IntegrityError as exc:
            holder = self._lock_holder(new.dir_lock) if new.dir_lock else None
            if holder is not None:
                name = new.dir_lock.split(":", 1)[1] if new.dir_lock else ""
                raise Conflict(
                    f"model_dir {name!r} is in use by job {holder}, which has not ended"
                ) from exc
            raise Conflict("the Idempotency-Key is already in use") from exc
        self._notify(new.id)
        return self.get(new.id, ANY_TENANT)

    def _lock_holder(self, dir_lock: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(jobs.c.id).where(jobs.c.dir_lock == dir_lock)
            ).scalar_one_or_none()

    def discard(self, job_id: str) -> None:
        """Forget a job that was never accepted (its task could not be sent)."""
        with self.engine.begin() as conn:
            conn.execute(delete(events).where(events.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id))

    def request_cancel(self, job_id: str, scope: Scope) -> JobRecord:
        """Queued and suspended jobs end cancelled at once; running ones go to cancelling
        for the worker (a cancel wins over a pending suspend or preemption); a job outside
        ``scope`` is not found."""
        before = self.get(job_id, scope).status
        now = utcnow()
        with self.engine.begin() as conn:
            queued = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .where(jobs.c.status.in_([JobStatus.queued.value, JobStatus.suspended.value]))
                .values(
                    status=JobStatus.cancelled.value,
                    finished_at=now,
                    updated_at=now,
                    dir_lock=None,
                    yield_request=None,
                )
            ).rowcount
            running = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.running.value)
                .values(status=JobStatus.cancelling.value, updated_at=now, yield_request=None)
            ).rowcount
            if queued:
                was = "suspended" if before is JobStatus.suspended else "queued"
                add_event(conn, job_id, JobStatus.cancelled.value, f"cancelled while {was}")
            if running:
                add_event(conn, job_id, JobStatus.cancelling.value, "cancel requested")
        if queued or running:
            self._notify(job_id)
        return self.get(job_id, ANY_TENANT)

    def delete_finished(self, job_id: str, scope: Scope) -> JobRecord:
        """Forget a job that has ended (its files are the caller's to remove); Conflict
        while it is queued or running; a job outside ``scope`` is not found."""
        job = self.get(job_id, scope)
        with self.engine.begin() as conn:
            gone = conn.execute(
                delete(jobs).where(jobs.c.id == job_id, jobs.c.status.in_(TERMINAL_VALUES))
            ).rowcount
            if not gone:
                raise Conflict(
                    f"job {job_id} is {job.status.value}: cancel it and wait for it to end "
                    "before deleting it"
                )
            conn.execute(delete(events).where(events.c.job_id == job_id))
        return job

    def record_disk_bytes(self, job_id: str, size: int) -> None:
        """The bytes an ended job's model_dir holds now (after the API stored a download
        archive there), for the tenant's quota; a job still running records its
        model_dir's bytes when it ends."""
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status.in_(TERMINAL_VALUES))
                .values(disk_bytes=size)
            )

    # reads ---------------------------------------------------------------

    def get(self, job_id: str, scope: Scope) -> JobRecord:
        """The job as stored; one outside ``scope`` (another tenant's) is not found."""
        return JobRecord.from_row(self._row(job_id, scope))

    def _row(self, job_id: str, scope: Scope) -> RowMapping:
        tenant = tenant_of(scope)
        with self.engine.connect() as conn:
            if tenant is None:
                row = conn.execute(BY_ID, {"job_id": job_id}).mappings().first()
            else:
                params = {"job_id": job_id, "tenant": tenant}
                row = conn.execute(BY_ID_AND_TENANT, params).mappings().first()
        if row is None:
            raise NotFound(f"no job with id {job_id!r}")
        return row

    def by_idempotency_key(self, key: str) -> JobRecord | None:
        """The job an Idempotency-Key made (keys are prefixed with their tenant)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.idempotency_key == key)).mappings().first()
        return None if row is None else JobRecord.from_row(row)

    def list_jobs(
        self,
        scope: Scope,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RecordPage:
        """The jobs in ``scope``, newest first; ``cursor`` is the opaque ``next_cursor`` of
        the previous page."""
        tenant = tenant_of(scope)
        limit = max(1, min(limit, MAX_PAGE))
        query = select(jobs).order_by(jobs.c.seq.desc()).limit(limit + 1)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        if tenant is not None:
            query = query.where(jobs.c.tenant == tenant)
        if cursor is not None:
            query = query.where(jobs.c.seq < self.cursors.decode("jobs", tenant, cursor))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        items = [JobRecord.from_row(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = self.cursors.encode("jobs", tenant, rows[limit - 1]["seq"])
        return RecordPage(items=items, next_cursor=next_cursor)

    def active_count(self, tenant: str) -> int:
        """The tenant's jobs that are queued, running or cancelling."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        jobs.c.tenant == tenant, jobs.c.status.in_(ACTIVE_VALUES)
                    )
                ).scalar_one()
            )

    def jobs_using_model_dir(self, model_dir: str, tenant: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        jobs.c.tenant == tenant, jobs.c.model_dir == model_dir
                    )
                ).scalar_one()
            )

    # A job's events are numbered 1, 2, ... within the job (``num``): that number is the
    # ``seq`` of its log and the id of its stream's events, so neither counts other jobs'.

    def events(self, job_id: str, since: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """The job's transitions and log lines after event ``since``, oldest first."""
        query = (
            select(events.c.num, events.c.at, events.c.kind, events.c.message)
            .where(events.c.job_id == job_id, events.c.num > since)
            .where(events.c.kind.not_in(STREAM_ONLY))
            .order_by(events.c.num)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            {"seq": r["num"], "at": aware(r["at"]), "kind": r["kind"], "message": r["message"]}
            for r in rows
        ]

    def stream_events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Every event of the job after number ``after`` (progress, loss, eval, end
        included), oldest first: seq (the event's number in the job), at, kind, message,
        data."""
        query = (
            select(
                events.c.num.label("seq"),
                events.c.at,
                events.c.kind,
                events.c.message,
                events.c.data,
            )
            .where(events.c.job_id == job_id, events.c.num > after)
            .order_by(events.c.num)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [{**row, "at": aware(row["at"])} for row in rows]

    def end_event(self, job_id: str) -> int | None:
        """The number of the job's "end" event; None while it has not ended."""
        query = select(func.min(events.c.num)).where(
            events.c.job_id == job_id, events.c.kind == END
        )
        with self.engine.connect() as conn:
            num = conn.execute(query).scalar_one()
        return None if num is None else int(num)

    def last_event(self, job_id: str) -> int:
        """The number of the job's newest event (0 when it has none)."""
        query = select(func.max(events.c.num)).where(events.c.job_id == job_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one() or 0)

    def resume_point(self, job_id: str, after: int) -> int:
        """The event number to resume after, given the ``Last-Event-ID`` or ``since`` a
        client sent. Before events were numbered per job, ids counted every job's events
        (``seq``): an id past the job's newest number is such an id, and stands for the
        job's events up to it."""
        if after <= 0:
            return 0
        last = self.last_event(job_id)
        if after <= last:
            return after
        # `seq` is a 32-bit column: a larger id is past every row.
        up_to = min(after, MAX_ROW)
        query = select(func.count()).where(events.c.job_id == job_id, events.c.seq <= up_to)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def export_path(self, job_id: str) -> str | None:
        """The job's published export as the store holds it now (any tenant's job)."""
        return self._row(job_id, ANY_TENANT)["export_path"]
