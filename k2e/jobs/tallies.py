"""The counters behind GET /metrics, kept in the job store (``k2e_tallies``).

Each thing counted is one row, written in the transaction that does it: a job submitted,
started for the first time (with its wait since submission), ended (its status, error
reason and run time: an export that fails its verification ends the job failed,
``export_mismatch``; the memory watchdog's stop, ``out_of_memory``), preempted, an
upload kept (its bytes). Counting rows at scrape time gives the same answer to every API process
and includes what worker processes did, with no per-process state to add up; and rows
are never deleted with their jobs, so the counts only grow, as Prometheus counters must.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, insert, select
from sqlalchemy.engine import Connection

from k2e.db import aware, utcnow
from k2e.tables import jobs, tallies

SUBMITTED, STARTED, PREEMPTED, UPLOADED = "submitted", "started", "preempted", "uploaded"
# An ended job's row has its terminal status as the event.
ENDED = ("succeeded", "failed", "cancelled")
# Upper bounds (seconds) of the wait and run-time histograms' buckets.
BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
BUCKETS += (14400.0, 43200.0, 86400.0)


def tally(
    conn: Connection, event: str, queue: str, reason: str = "", value: float | None = None
) -> None:
    """Count one ``event`` in ``conn``'s transaction."""
    conn.execute(
        insert(tallies).values(
            at=utcnow(), event=event, queue=queue[:32], reason=reason[:32], value=value
        )
    )


def tally_job(conn: Connection, event: str, job_id: str) -> None:
    """Count ``event`` of the job under its queue."""
    queue = conn.execute(select(jobs.c.queue).where(jobs.c.id == job_id)).scalar_one_or_none()
    if queue is not None:
        tally(conn, event, str(queue))


def tally_end(conn: Connection, job_id: str, status: str) -> None:
    """Count the job's end, read from its row as the ending transaction left it."""
    row = conn.execute(
        select(jobs.c.queue, jobs.c.error, jobs.c.started_at, jobs.c.finished_at).where(
            jobs.c.id == job_id
        )
    ).first()
    if row is None:
        return
    error: dict[str, Any] = row.error or {}
    started, finished = aware(row.started_at), aware(row.finished_at)
    run_s = (finished - started).total_seconds() if started and finished else None
    tally(conn, status, str(row.queue), str(error.get("reason") or ""), run_s)


def tally_first_start(conn: Connection, queue: str, created_at: datetime, now: datetime) -> None:
    """Count a job's first start, with its wait since submission."""
    created = aware(created_at)
    wait_s = max(0.0, (now - created).total_seconds()) if created else None
    tally(conn, STARTED, queue, value=wait_s)


@dataclass(frozen=True)
class Tally:
    """The rows of one (event, queue, reason): how many, the sum of their values, and how
    many values fall at or below each of BUCKETS (cumulative, as Prometheus counts)."""

    event: str
    queue: str
    reason: str
    count: int
    observed: int
    total: float
    buckets: tuple[int, ...]


def read_tallies(conn: Connection) -> list[Tally]:
    """Every group of the ledger, counted (one query)."""
    value = tallies.c.value
    columns = [
        tallies.c.event,
        tallies.c.queue,
        tallies.c.reason,
        func.count().label("count"),
        func.count(value).label("observed"),
        func.coalesce(func.sum(value), 0.0).label("total"),
        *(
            func.sum(case((value <= bound, 1), else_=0)).label(f"le{i}")
            for i, bound in enumerate(BUCKETS)
        ),
    ]
    query = select(*columns).group_by(tallies.c.event, tallies.c.queue, tallies.c.reason)
    return [
        Tally(
            str(r["event"]),
            str(r["queue"]),
            str(r["reason"]),
            int(r["count"]),
            int(r["observed"]),
            float(r["total"]),
            tuple(int(r[f"le{i}"] or 0) for i in range(len(BUCKETS))),
        )
        for r in conn.execute(query).mappings().all()
    ]
