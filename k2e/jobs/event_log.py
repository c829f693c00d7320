"""A job's event stream: what each stored event row shows on GET /jobs/{id}/events, and
the notice a writer publishes after each commit so that listeners read at once.

Every event is a row of ``k2e_job_events`` (its ``num``, 1, 2, ... within the job, is the
event's id), written in the same transaction as the change it reports; the store is the
history a late or reconnecting client reads. The notice on Redis pub/sub (one channel
per job) carries nothing but the job id: it only says "read again". A lost notice delays
a listener until its next poll; it never loses an event.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

import redis

from k2e.schemas import JobStatus

log = logging.getLogger("k2e.events")

# Kinds only the event stream shows (GET /jobs/{id}/logs shows statuses and "log").
PROGRESS, LOSS, EVAL, END, LOG = "progress", "loss", "eval", "end", "log"
STREAM_ONLY = (PROGRESS, LOSS, EVAL, END)
STATUS_KINDS = frozenset(s.value for s in JobStatus)
CHANNEL_PREFIX = "k2e:job-events:"


def channel(job_id: str) -> str:
    """The pub/sub channel on which a job's new events are announced."""
    return CHANNEL_PREFIX + job_id


def payload(kind: str, at: datetime, message: str, data: Any) -> tuple[str, dict[str, Any]]:
    """The SSE event name and its JSON payload for a stored row (``end`` is filled by the
    server with the job itself)."""
    if kind in STATUS_KINDS:
        return "status", {"status": kind, "at": at.isoformat(), "message": message}
    if kind == LOG:
        return LOG, {"message": message, "at": at.isoformat()}
    if kind == PROGRESS:
        return PROGRESS, {**(data or {}), "at": at.isoformat()}
    if kind in (LOSS, EVAL):
        return kind, dict(data or {})
    return kind, {}


class EventNotifier:
    """Publishes "job X has new events" after a write commits: one PUBLISH per write,
    whatever the number of listeners (Redis fans it out).

    Never fails the write: when Redis does not answer, notices stop for ``backoff_s``
    (listeners poll the store meanwhile), so a job never waits on a dead Redis more than
    one short timeout per ``backoff_s``.
    """

    def __init__(self, url: str, timeout_s: float = 0.5, backoff_s: float = 5.0) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._backoff_s = backoff_s
        self._quiet_until = 0.0

    def notify(self, job_id: str) -> None:
        if time.monotonic() < self._quiet_until:
            return
        try:
            self._client.publish(channel(job_id), job_id)
        except (redis.RedisError, OSError) as exc:
            self._quiet_until = time.monotonic() + self._backoff_s
            log.warning("event notice for job %s not published (%s); listeners poll", job_id, exc)


def notifier_for(redis_url: str | None) -> EventNotifier | None:
    """The notifier on k2e's Redis; None without one (event streams then poll the store)."""
    return EventNotifier(redis_url) if redis_url else None
