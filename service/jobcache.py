"""GET /jobs/{id} without blocking the event loop and without losing its speed.

The store is read on a few threads of this cache's own (never on the event loop). What
was read is kept in memory: an ended job no longer changes, so for ``ttl_s``; a queued
or running job for ``live_ttl_s`` (a fraction of a second: a worker writes progress at
most every few hundred steps or 2 s, so a client polling sees at most that much more
delay). Concurrent reads of one job share one query.

Entries are kept per scope (k2e.tenancy.scope): a member's read looks for ``(its
tenant's scope, id)`` and reads the store with its tenant in the query, an admin's for
``(ANY_TENANT, id)``. So a member asking
for another tenant's job id does exactly what it does for an unknown id (no entry, one
query that finds no row, 404), however recently that job's owner read it: neither the
answer nor its timing tells that the job exists. A member's entry holds the job as
members see it (``member_view``: no tracebacks or server paths in its error).

Deleting or cancelling a job forgets it here at once; another API process may serve the
old answer for up to ``ttl_s`` (ended) or ``live_ttl_s`` (live) after.
"""

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from k2e.cluster_schemas import Cluster
from k2e.jobs.job_store import JobStore
from k2e.jobs.records import JobRecord
from k2e.queue_schemas import QueuePlace
from k2e.schemas import TERMINAL_STATUSES, Job, JobStatus
from k2e.tenancy.scope import Scope

MAX_ENTRIES = 10_000


Key = tuple[Scope, str]  # (the reader's scope, the job id)


class JobCache:
    def __init__(
        self,
        ttl_s: float,
        live_ttl_s: float = 0.05,
        readers: int = 4,
        member_view: Callable[[Job], Job] | None = None,
        place: Callable[[JobRecord], QueuePlace | None] | None = None,
        cluster: Callable[[JobRecord], Cluster | None] | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.live_ttl_s = live_ttl_s
        self.member_view = member_view
        self.place = place
        self.cluster = cluster
        self._entries: dict[Key, tuple[bytes, float]] = {}
        self._scopes: dict[str, set[Scope]] = {}  # job id -> scopes holding it
        self._reading: dict[Key, asyncio.Future[bytes]] = {}
        # Threads of its own for store reads: fewer threads contending for the GIL than
        # FastAPI's pool of 40 (measured: bench/store_reads.py).
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="k2e-job-read")

    async def read(self, store: JobStore, job_id: str, scope: Scope) -> bytes:
        """The job's public JSON, from memory while fresh, else from the store; a job
        outside the caller's ``scope`` (another tenant's) is not found."""
        key = (scope, job_id)
        body = self.fresh(scope, job_id)
        if body is not None:
            return body
        pending = self._reading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._reading[key] = future
        try:
            job = await loop.run_in_executor(self._readers, self._load, store, job_id, scope)
            if not scope.is_any and self.member_view is not None:
                job = self.member_view(job)
            body = job.model_dump_json().encode()
            self._keep(key, job, body)
            future.set_result(body)
            return body
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            self._reading.pop(key, None)

    def _load(self, store: JobStore, job_id: str, scope: Scope) -> Job:
        """The job's public body (with its place in its queue while queued, and a cluster
        job's members)."""
        record = store.get(job_id, scope)
        place = None
        if record.status is JobStatus.queued and self.place is not None:
            place = self.place(record)
        cluster = self.cluster(record) if self.cluster is not None else None
        return record.public(place, cluster)

    def fresh(self, scope: Scope, job_id: str) -> bytes | None:
        """The job's JSON as ``scope`` sees it, if in memory and fresh, else None (no
        store read)."""
        entry = self._entries.get((scope, job_id))
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def _keep(self, key: Key, job: Job, body: bytes) -> None:
        ttl = self.ttl_s if job.status in TERMINAL_STATUSES else self.live_ttl_s
        if ttl <= 0:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
            self._scopes.clear()
        self._entries[key] = (body, time.monotonic() + ttl)
        self._scopes.setdefault(key[1], set()).add(key[0])

    def forget(self, job_id: str) -> None:
        for scope in self._scopes.pop(job_id, ()):
            self._entries.pop((scope, job_id), None)
