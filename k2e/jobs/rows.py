"""Job rows: the by-id queries and events (a row becomes a record in k2e.jobs.records)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from k2e.db import utcnow
from k2e.jobs.tallies import tally_end
from k2e.schemas import TERMINAL_STATUSES
from k2e.tables import events, jobs
from k2e.webhooks import outbox
from k2e.webhooks.schemas import EventType

# Built once: jobs are read by id on every GET /jobs/{id} and every progress update.
BY_ID = select(jobs).where(jobs.c.id == bindparam("job_id"))
BY_ID_AND_TENANT = BY_ID.where(jobs.c.tenant == bindparam("tenant"))
TERMINAL_VALUES = [s.value for s in TERMINAL_STATUSES]


def number_events(conn: Connection, job_id: str, count: int) -> int | None:
    """Numbers for ``count`` new events of the job: returns the first (the others follow
    it); None when the job is gone. Taking them updates the job's row, which a concurrent
    writer of the same job then waits for until this transaction ends: numbers are given
    in the order their events become visible."""
    # Rows older than events_num count the events they have (the upkeep numbers those).
    older = select(func.count()).where(events.c.job_id == jobs.c.id).scalar_subquery()
    last = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id)
        .values(events_num=func.coalesce(jobs.c.events_num, older) + count)
        .returning(jobs.c.events_num)
    ).scalar_one_or_none()
    return None if last is None else int(last) - count + 1


def add_event(
    conn: Connection,
    job_id: str,
    kind: str,
    message: str = "",
    data: Any = None,
    webhook: EventType | None = None,
) -> None:
    """A transition (``kind`` is the new status), a log line (``kind`` "log"), or an event
    only the stream shows (k2e.jobs.event_log). A terminal status is followed by the job's
    "end" event, in the same transaction: every way a job ends comes through here. So do
    the webhook events (k2e.webhooks.outbox): ended and suspended by the status, others
    (``webhook``: a preemption) named by the caller."""
    now = utcnow()
    ends = kind in TERMINAL_VALUES
    num = number_events(conn, job_id, 2 if ends else 1)
    if num is None:
        return  # the job is gone: nobody can read its events
    conn.execute(
        insert(events).values(job_id=job_id, num=num, at=now, kind=kind, message=message, data=data)
    )
    if ends:
        conn.execute(
            insert(events).values(job_id=job_id, num=num + 1, at=now, kind="end", message="")
        )
        tally_end(conn, job_id, kind)
    webhook = webhook or outbox.BY_STATUS.get(kind)
    if webhook is not None:
        outbox.emit(conn, job_id, webhook)
