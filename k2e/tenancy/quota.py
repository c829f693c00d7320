"""Quotas taken atomically: a tenant's bytes and its jobs at once.

A quota is checked and taken in one transaction that first locks the tenant's row, so
that one tenant's concurrent requests take turns (a row lock on PostgreSQL, the write
lock on SQLite) and each sees what the one before it took.

Usage is summed from the rows that hold it (uploads, the model_dirs of ended jobs, the
reservations of uploads being inspected), never kept in a counter: deleting an upload or
a job, retention and a tenant's deletion free bytes by changing those rows, and a store
written by an older k2e needs no migration. A reservation a crash left behind stops
counting after ``RESERVATION_TTL``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from k2e.db import utcnow
from k2e.errors import FieldError, NotFound, UploadTooLarge
from k2e.schemas import JobStatus
from k2e.tables import jobs, tenants, upload_reservations, uploads

# Longer than any upload's inspection (the sandbox's time limit is far shorter); the
# same age after which an upload's temporary file counts as a crash's leftover.
RESERVATION_TTL = timedelta(hours=1)
ACTIVE = (JobStatus.queued.value, JobStatus.running.value, JobStatus.cancelling.value)


class JobQuotaReached(Exception):
    """The tenant has ``limit`` jobs queued and running already."""

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(f"{active} of {limit} jobs active")
        self.active = active
        self.limit = limit


def lock_tenant(conn: Connection, tenant: str) -> None:
    """Hold the tenant's row until ``conn``'s transaction ends (NotFound once deleted).

    An UPDATE rather than SELECT ... FOR UPDATE: SQLite has no row locks, and an UPDATE
    as a transaction's first statement takes its write lock before anything is read.
    """
    locked = conn.execute(
        update(tenants).where(tenants.c.name == tenant).values(name=tenants.c.name)
    ).rowcount
    if not locked:
        raise NotFound(f"no tenant named {tenant!r}")


def bytes_in_use(conn: Connection, tenant: str, now: datetime) -> int:
    """Uploads, ended jobs' model_dirs and live reservations of ``tenant``, in bytes."""
    kept = select(func.coalesce(func.sum(uploads.c.size), 0)).where(uploads.c.tenant == tenant)
    dirs = select(func.coalesce(func.sum(jobs.c.disk_bytes), 0)).where(jobs.c.tenant == tenant)
    reserved = select(func.coalesce(func.sum(upload_reservations.c.bytes), 0)).where(
        upload_reservations.c.tenant == tenant,
        upload_reservations.c.created_at > now - RESERVATION_TTL,
    )
    return sum(int(conn.execute(query).scalar_one()) for query in (kept, dirs, reserved))


def active_jobs(conn: Connection, tenant: str) -> int:
    """The tenant's jobs that are queued, running or cancelling."""
    query = select(func.count()).where(jobs.c.tenant == tenant, jobs.c.status.in_(ACTIVE))
    return int(conn.execute(query).scalar_one())


def hold_job_slot(conn: Connection, tenant: str, limit: int) -> None:
    """Lock the tenant for the rest of ``conn``'s transaction, in which a job is
    recorded; JobQuotaReached when it has ``limit`` active jobs already."""
    lock_tenant(conn, tenant)
    active = active_jobs(conn, tenant)
    if active >= limit:
        raise JobQuotaReached(active, limit)


def reserve_bytes(engine: Engine, tenant: str, size: int, limit: int, field: str) -> int:
    """Hold ``size`` bytes of the tenant's quota of ``limit`` for an upload (the multipart
    field ``field``) until it is kept or released; UploadTooLarge when they do not fit.
    Returns the reservation's id."""
    now = utcnow()
    with engine.begin() as conn:
        lock_tenant(conn, tenant)
        conn.execute(
            delete(upload_reservations).where(
                upload_reservations.c.tenant == tenant,
                upload_reservations.c.created_at <= now - RESERVATION_TTL,
            )
        )
        used = bytes_in_use(conn, tenant, now)
        if used + size > limit:
            left = max(0, limit - used)
            msg = (
                f"the file's {size} bytes do not fit the tenant's storage quota "
                f"({limit} bytes, {left} left)"
            )
            raise UploadTooLarge(msg, [FieldError((field,), msg)])
        return int(
            conn.execute(
                insert(upload_reservations)
                .values(tenant=tenant, bytes=size, created_at=now)
                .returning(upload_reservations.c.seq)
            ).scalar_one()
        )


def release_bytes(conn: Connection, reservation: int) -> None:
    """Give a reservation's bytes back (the upload was refused, or is now kept)."""
    conn.execute(delete(upload_reservations).where(upload_reservations.c.seq == reservation))
