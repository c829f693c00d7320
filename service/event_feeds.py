"""GET /jobs/{id}/events: a job's events as server-sent events, history first, then live.

The store holds every event (k2e.jobs.event_log); this module reads it without blocking the
event loop and learns of new rows from Redis pub/sub. Per API process, one ``JobFeed``
per followed job reads the new rows once and hands them to every stream of that job, so
fifty watchers of a job cost the store one read per write, not fifty. Without Redis
(or while it is down), feeds poll the store every ``poll_s``.

A stream joins its job's feed first, then reads the history after its ``Last-Event-ID``,
then forwards what the feed brings, skipping ids it already sent: the feed's starting
point is read before the history is, so no event falls between the two.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis

from k2e.cluster_schemas import Cluster
from k2e.jobs.event_log import END, channel, payload
from k2e.jobs.job_store import JobStore
from k2e.jobs.records import JobRecord
from k2e.schemas import Job
from k2e.tenancy.scope import ANY_TENANT

log = logging.getLogger("k2e.api.events")
T = TypeVar("T")
Row = dict[str, Any]
PAGE = 1000
# Re-read the store this often even when notices arrive: a notice lost while Redis
# reconnected delays an event by at most this much.
SAFETY_READ_S = 5.0
RESUBSCRIBE_S = 5.0


@dataclass(frozen=True)
class Batch:
    """New rows of a job, oldest first; ``end_job``: the job when they end it."""

    rows: list[Row]
    end_job: Job | None


class EventBroker:
    """Streams of this API process: store reads on threads of its own, one feed per job."""

    def __init__(
        self,
        store: JobStore,
        redis_url: str | None,
        poll_s: float,
        keepalive_s: float,
        cluster: Callable[[JobRecord], Cluster | None] | None = None,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.poll_s = poll_s
        self.keepalive_s = keepalive_s
        self._redis = (
            aioredis.Redis.from_url(redis_url, socket_connect_timeout=1) if redis_url else None
        )
        self._readers = ThreadPoolExecutor(4, thread_name_prefix="k2e-events")
        self._feeds: dict[str, JobFeed] = {}

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    async def job(self, job_id: str) -> Job:
        """The job, read now (never a cached copy)."""
        record = await self.run(self.store.get, job_id, ANY_TENANT)
        if self.cluster is None:
            return record.public()
        # A cluster job's end shows its members as GET /jobs/{id} does.
        return record.public(None, await self.run(self.cluster, record))

    @contextlib.asynccontextmanager
    async def follow(self, job_id: str) -> AsyncIterator["asyncio.Queue[Batch]"]:
        """A queue of the job's new rows, from a point before this call returned."""
        feed = self._feeds.get(job_id)
        if feed is None:
            feed = self._feeds[job_id] = JobFeed(self, job_id)
        queue: asyncio.Queue[Batch] = asyncio.Queue()
        feed.queues.add(queue)
        try:
            await feed.ready.wait()
            yield queue
        finally:
            feed.queues.discard(queue)
            if not feed.queues and self._feeds.get(job_id) is feed:
                del self._feeds[job_id]
                feed.close()

    async def subscribe(self, job_id: str) -> "aioredis.client.PubSub | None":
        """A pub/sub subscription to the job's notices; None without Redis or while it is
        down (the feed then polls)."""
        if self._redis is None:
            return None
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel(job_id))
            return pubsub
        except Exception as exc:  # RedisError, OSError, or a connection of a closed loop
            log.warning("job %s: no event notices from Redis (%s); polling the store", job_id, exc)
            await pubsub.aclose()
            return None


class JobFeed:
    """Reads one job's new rows when told (a notice) or every ``poll_s`` without notices,
    and hands each batch to every queue following the job."""

    def __init__(self, broker: EventBroker, job_id: str) -> None:
        self.broker, self.job_id = broker, job_id
        self.queues: set[asyncio.Queue[Batch]] = set()
        self.ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def close(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        broker = self.broker
        pubsub = await broker.subscribe(self.job_id)
        subscribed_at = asyncio.get_running_loop().time()
        try:
            cursor = await self._retrying(broker.store.last_event)
            self.ready.set()
            while True:
                if pubsub is None and broker._redis is not None:
                    now = asyncio.get_running_loop().time()
                    if now - subscribed_at >= RESUBSCRIBE_S:
                        pubsub, subscribed_at = await broker.subscribe(self.job_id), now
                pubsub = await self._wait(pubsub)
                rows = await self._retrying(broker.store.stream_events, cursor)
                if not rows:
                    continue
                cursor = rows[-1]["seq"]
                ended = None
                if any(row["kind"] == END for row in rows):
                    try:
                        ended = await broker.job(self.job_id)
                    except Exception:  # deleted meanwhile: a stream then reads it itself
                        log.warning("job %s: reading the ended job failed", self.job_id)
                for queue in self.queues:
                    queue.put_nowait(Batch(rows, ended))
        finally:
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _wait(
        self, pubsub: "aioredis.client.PubSub | None"
    ) -> "aioredis.client.PubSub | None":
        """Until a notice (then any already queued are drained too) or a timeout;
        returns the subscription, or None once it broke."""
        if pubsub is None:
            await asyncio.sleep(self.broker.poll_s)
            return None
        try:
            message = await pubsub.get_message(timeout=SAFETY_READ_S)
            while message is not None:
                message = await pubsub.get_message(timeout=0)
            return pubsub
        except Exception as exc:  # RedisError, OSError, or a connection of a closed loop
            log.warning("job %s: Redis notices lost (%s); polling the store", self.job_id, exc)
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            return None

    async def _retrying(self, fn: Callable[..., T], *args: Any) -> T:
        """A store read, tried again every ``poll_s`` while the store does not answer."""
        while True:
            try:
                return await self.broker.run(fn, self.job_id, *args)
            except Exception:
                log.warning("job %s: reading events failed", self.job_id, exc_info=True)
                await asyncio.sleep(self.broker.poll_s)


def sse(event_id: int, event: str, data: str) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {data}\n\n".encode()


KEEP_ALIVE = b": keep-alive\n\n"
# The last thing a stream sends when its caller is no longer signed in (a comment: clients
# ignore it; a reconnect then answers 401).
SIGNED_OUT = b": closed: the API key or session is no longer valid\n\n"


async def event_stream(
    broker: EventBroker,
    job_id: str,
    after: int,
    clean: Callable[[str], str],
    show: Callable[[Job], Job] = lambda job: job,
    authorized: Callable[[], Awaitable[bool]] | None = None,
    recheck_s: float = 5.0,
) -> AsyncIterator[bytes]:
    """The SSE body: the job's events with id > ``after``, history then live, ending with
    ``end`` (the job's final JSON). ``clean`` rewrites status and log messages for the
    caller, ``show`` the job (no tracebacks or server paths for members). ``authorized``
    is asked again every ``recheck_s``: once it says no (the key was revoked, the session
    ended), the stream closes, however long the job still runs."""
    loop = asyncio.get_running_loop()
    recheck_at = loop.time() + recheck_s

    async def caller_gone() -> bool:
        nonlocal recheck_at
        if authorized is None or loop.time() < recheck_at:
            return False
        recheck_at = loop.time() + recheck_s
        return not await authorized()

    def render(row: Row, ended: Job | None) -> bytes:
        if row["kind"] == END:
            return sse(row["seq"], END, show(ended).model_dump_json() if ended else "{}")
        name, data = payload(row["kind"], row["at"], clean(row["message"]), row["data"])
        return sse(row["seq"], name, json.dumps(data, separators=(",", ":")))

    async with broker.follow(job_id) as queue:
        last = after
        while True:  # the history, a page at a time
            if await caller_gone():
                yield SIGNED_OUT
                return
            rows = await broker.run(broker.store.stream_events, job_id, last, PAGE)
            for row in rows:
                ended = await broker.job(job_id) if row["kind"] == END else None
                yield render(row, ended)
                last = row["seq"]
                if ended is not None:
                    return
            if len(rows) < PAGE:
                break
        end = await broker.run(broker.store.end_event, job_id)
        if end is not None and end <= last:
            return  # resumed after the end: nothing more will come
        keepalive_at = loop.time() + broker.keepalive_s
        while True:
            if await caller_gone():
                yield SIGNED_OUT
                return
            wait = min(keepalive_at, recheck_at if authorized is not None else keepalive_at)
            try:
                batch = await asyncio.wait_for(queue.get(), max(0.0, wait - loop.time()))
            except TimeoutError:
                if loop.time() >= keepalive_at:
                    keepalive_at = loop.time() + broker.keepalive_s
                    yield KEEP_ALIVE
                continue
            keepalive_at = loop.time() + broker.keepalive_s
            for row in batch.rows:
                if row["seq"] <= last:
                    continue
                if row["kind"] == END:
                    yield render(row, batch.end_job or await broker.job(job_id))
                    return
                yield render(row, None)
                last = row["seq"]
