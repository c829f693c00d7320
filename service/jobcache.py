"""GET /jobs/{id} without blocking the event loop and without losing its speed.

The store is read on a few threads of this cache's own (never on the event loop). What
was read is kept in memory: an ended job no longer changes, so for ``ttl_s``; a queued
or running job for ``live_ttl_s`` (a fraction of a second: a worker writes progress at
most every few hundred steps or 2 s, so a client polling sees at most that much more
delay). Concurrent reads of one job share one query.

Entries remember their tenant: a member reading another tenant's job id is answered as
for an unknown id, cached or not. Deleting or cancelling a job forgets it here at once;
another API process may serve the old answer for up to ``ttl_s`` (ended) or
``live_ttl_s`` (live) after.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from k2e.errors import NotFound
from k2e.jobs.store import JobStore
from k2e.schemas import TERMINAL_STATUSES, Job

MAX_ENTRIES = 10_000


class JobCache:
    def __init__(self, ttl_s: float, live_ttl_s: float = 0.05, readers: int = 4) -> None:
        self.ttl_s = ttl_s
        self.live_ttl_s = live_ttl_s
        self._entries: dict[str, tuple[str | None, bytes, float]] = {}
        self._reading: dict[str, asyncio.Future[tuple[str | None, bytes]]] = {}
        # Threads of its own for store reads: fewer threads contending for the GIL than
        # FastAPI's pool of 40 (measured: bench/store_reads.py).
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="k2e-job-read")

    async def read(self, store: JobStore, job_id: str, tenant: str | None) -> bytes:
        """The job's JSON, from memory while fresh, else from the store; ``tenant``: the
        caller's scope (None: any tenant's job)."""
        owner, body = await self._read(store, job_id)
        if tenant is not None and owner != tenant:
            raise NotFound(f"no job with id {job_id!r}")
        return body

    def fresh(self, job_id: str) -> tuple[str | None, bytes] | None:
        """The job's tenant and JSON if in memory and fresh, else None (no store read)."""
        entry = self._entries.get(job_id)
        if entry is None or entry[2] <= time.monotonic():
            return None
        return entry[0], entry[1]

    async def _read(self, store: JobStore, job_id: str) -> tuple[str | None, bytes]:
        entry = self._entries.get(job_id)
        if entry is not None and entry[2] > time.monotonic():
            return entry[0], entry[1]
        pending = self._reading.get(job_id)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[str | None, bytes]] = loop.create_future()
        self._reading[job_id] = future
        try:
            job = await loop.run_in_executor(self._readers, store.get, job_id)
            body = job.model_dump_json().encode()
            self._keep(job, body)
            future.set_result((job.tenant, body))
            return job.tenant, body
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            self._reading.pop(job_id, None)

    def _keep(self, job: Job, body: bytes) -> None:
        ttl = self.ttl_s if job.status in TERMINAL_STATUSES else self.live_ttl_s
        if ttl <= 0:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[job.id] = (job.tenant, body, time.monotonic() + ttl)

    def forget(self, job_id: str) -> None:
        self._entries.pop(job_id, None)
