"""The counters behind GET /metrics, kept in the job store (``k2e_tallies``).

Each thing counted is one row, written in the transaction that does it: a job submitted,
started for the first time (with its wait since submission), ended (its status, error
reason and run time: an export that fails its verification ends the job failed,
``export_mismatch``; the memory watchdog's stop, ``out_of_memory``), preempted, an
upload kept (its bytes). Counting rows at scrape time gives the same answer to every API
process and includes what worker processes did, with no per-process state to add up; and
rows are never deleted with their jobs, so the counts only grow, as Prometheus counters
must. Scrapes fold the ledger's rows into per-bucket totals (``fold``), so that a scrape
reads a few hundred rows however long the store has run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, case, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from k2e.db import aware, utcnow
from k2e.tables import jobs, tallies, tally_totals

SUBMITTED, STARTED, PREEMPTED, UPLOADED = "submitted", "started", "preempted", "uploaded"
# An ended job's row has its terminal status as the event.
ENDED = ("succeeded", "failed", "cancelled")
# Upper bounds (seconds) of the wait and run-time histograms' buckets.
BUCKETS: tuple[float, ...] = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
BUCKETS += (3600.0, 7200.0, 14400.0, 43200.0, 86400.0)


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
    """The rows of one (event, queue, reason): how many, how many had a value, the sum of
    the values, and how many values fall at or below each of BUCKETS (cumulative, as
    Prometheus counts them)."""

    event: str
    queue: str
    reason: str
    count: int
    observed: int
    total: float
    buckets: tuple[int, ...]


# The bucket a value falls in (an index into BUCKETS; len(BUCKETS) above the last; -1 none).
_BUCKET = case(
    *((tallies.c.value <= bound, i) for i, bound in enumerate(BUCKETS)),
    (tallies.c.value.is_not(None), len(BUCKETS)),
    else_=-1,
)
_KEY = (tallies.c.event, tallies.c.queue, tallies.c.reason, _BUCKET)
FOLD_AFTER = 100  # ledger rows; beyond them a scrape folds the ledger into the totals


def read_tallies(conn: Connection) -> list[Tally]:
    """Every (event, queue, reason) counted: the folded totals and the newest rows."""
    groups: dict[tuple[str, str, str], list[Any]] = {}
    rows = list(
        conn.execute(
            select(*_KEY, func.count(), func.coalesce(func.sum(tallies.c.value), 0.0)).group_by(
                *_KEY
            )
        ).all()
    )
    rows += conn.execute(
        select(
            tally_totals.c.event,
            tally_totals.c.queue,
            tally_totals.c.reason,
            tally_totals.c.bucket,
            tally_totals.c.count,
            tally_totals.c.total,
        )
    ).all()
    for event, queue, reason, bucket, count, total in rows:
        group = groups.setdefault((str(event), str(queue), str(reason)), [0, 0.0, Counter()])
        group[0] += int(count)
        group[1] += float(total or 0.0)
        group[2][int(bucket)] += int(count)
    tallies_read = []
    for (event, queue, reason), (count, total, by_bucket) in sorted(groups.items()):
        cumulative, running = [], 0
        for i in range(len(BUCKETS)):
            running += by_bucket[i]
            cumulative.append(running)
        observed = count - by_bucket[-1]
        tallies_read.append(Tally(event, queue, reason, count, observed, total, tuple(cumulative)))
    return tallies_read


def fold(engine: Engine, after: int = FOLD_AFTER) -> int:
    """Fold the ledger's rows into the totals when it holds more than ``after`` (scrapes
    call this): the rows a transaction deletes are its own to add, so processes folding at
    once never count a row twice. Returns the rows folded."""
    with engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(tallies)).scalar_one() <= after:
            return 0
    with engine.begin() as conn:
        top = conn.execute(select(func.max(tallies.c.seq))).scalar_one_or_none()
        if top is None:
            return 0
        gone = conn.execute(
            delete(tallies)
            .where(tallies.c.seq <= top)
            .returning(tallies.c.event, tallies.c.queue, tallies.c.reason, tallies.c.value)
        ).all()
        sums: dict[tuple[str, str, str, int], list[float]] = {}
        for event, queue, reason, value in gone:
            key = (str(event), str(queue), str(reason), _bucket_of(value))
            entry = sums.setdefault(key, [0, 0.0])
            entry[0] += 1
            entry[1] += float(value or 0.0)
        # In key order, so that two folds never wait for each other's rows in a cycle.
        for (event, queue, reason, bucket), (count, total) in sorted(sums.items()):
            _add_total(conn, event, queue, reason, bucket, int(count), total)
    return len(gone)


def _bucket_of(value: float | None) -> int:
    if value is None:
        return -1
    return next((i for i, bound in enumerate(BUCKETS) if value <= bound), len(BUCKETS))


def _add_total(
    conn: Connection, event: str, queue: str, reason: str, bucket: int, count: int, total: float
) -> None:
    dialect = conn.dialect.name
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = upsert(tally_totals).values(
        event=event, queue=queue, reason=reason, bucket=bucket, count=count, total=total
    )
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["event", "queue", "reason", "bucket"],
            set_={
                "count": tally_totals.c.count + statement.excluded.count,
                "total": tally_totals.c.total + statement.excluded.total,
            },
        )
    )
