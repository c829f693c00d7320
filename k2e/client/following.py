"""Following a job: the API's event stream (``GET /jobs/{id}/events``), resumed with
``Last-Event-ID`` after a dropped connection, or, from an API without that route, the
same events made from polling ``GET /jobs/{id}`` and its log."""

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from k2e.client.exceptions import ApiUnreachable, ProblemError
from k2e.client.sse import SSEDecoder, iter_events
from k2e.client.transport import Session
from k2e.compat import UTC
from k2e.schemas import TERMINAL_STATUSES, Job, JobLog, JobStatus

EVENT_KINDS = ("status", "progress", "loss", "log", "eval", "end")
# The server sends a keep-alive comment every ~15 s: a read silent for far longer than
# that is a dead connection.
STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)


@dataclass(frozen=True)
class JobStreamEvent:
    """One event of a job: ``event`` is one of EVENT_KINDS, ``data`` its JSON payload.
    ``id`` is the server's event id (None for events made from polling)."""

    event: str
    data: dict[str, Any]
    id: int | None = None

    def job(self) -> Job:
        """The final job of an ``end`` event."""
        return Job.model_validate(self.data)


@dataclass
class FollowOptions:
    # Consecutive failed connections (no event received in between) before giving up.
    max_reconnects: int = 20
    reconnect_delay_s: float = 1.0
    poll_interval_s: float = 0.5
    # Called on each reconnect with the id the stream resumes after (for display).
    on_reconnect: Callable[[int | None], None] | None = field(default=None, repr=False)


def follow(
    session: Session,
    job_id: str,
    last_event_id: int | None = None,
    options: FollowOptions | None = None,
) -> Iterator[JobStreamEvent]:
    """Every event of the job after ``last_event_id`` (all of them by default), ending
    with ``end``: the job's own when it ends, or one made here with the job when it is
    suspended (nothing comes until it is resumed). Falls back to polling when the API
    has no event stream."""
    options = options or FollowOptions()
    failures = 0
    delay = options.reconnect_delay_s
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        decoder = SSEDecoder()
        try:
            with session.stream(
                "GET", f"/jobs/{job_id}/events", headers=headers, timeout=STREAM_TIMEOUT
            ) as response:
                for message in iter_events(response.iter_text(), decoder):
                    if message.event not in EVENT_KINDS:
                        continue
                    event = JobStreamEvent(message.event, json.loads(message.data), _id(message.id))
                    if event.id is not None:
                        last_event_id = event.id
                    failures = 0
                    yield event
                    if event.event == "end":
                        return
                    if _suspended(event):
                        # Not an end, but nothing more comes until someone resumes it:
                        # the follower stops here, told so by a last `end` with the job.
                        job = _suspended_job(session, job_id)
                        if job is not None:
                            yield JobStreamEvent("end", job.model_dump(mode="json"))
                            return
        except ProblemError as exc:
            if exc.status in (404, 405) and _job_exists(session, job_id):
                # The job is there but the route is not: an API from before the stream.
                yield from poll(session, job_id, options.poll_interval_s)
                return
            if exc.status < 500:
                raise
        except ApiUnreachable:
            pass
        # The stream dropped (or closed before `end`, or the API answered 5xx): resume.
        failures += 1
        if failures > options.max_reconnects:
            raise ApiUnreachable(f"the event stream of job {job_id} kept failing")
        # The server's `retry:` field, when it sent one, says how long to wait.
        if decoder.retry_ms is not None:
            delay = decoder.retry_ms / 1000
        time.sleep(delay)
        if options.on_reconnect is not None:
            options.on_reconnect(last_event_id)


def _suspended(event: JobStreamEvent) -> bool:
    return event.event == "status" and event.data.get("status") == JobStatus.suspended


def _suspended_job(session: Session, job_id: str) -> Job | None:
    """The job if it is suspended now (a suspended event of its history is not enough:
    it may have been resumed since)."""
    job = session.get_as(Job, f"/jobs/{job_id}")
    return job if job.status == JobStatus.suspended else None


def _id(raw: str | None) -> int | None:
    return int(raw) if raw is not None and raw.isdigit() else None


def _job_exists(session: Session, job_id: str) -> bool:
    try:
        session.request("GET", f"/jobs/{job_id}")
    except ProblemError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _now() -> str:
    return datetime.now(UTC).isoformat()


def poll(session: Session, job_id: str, interval_s: float = 0.5) -> Iterator[JobStreamEvent]:
    """The stream's events made from ``GET /jobs/{id}`` and ``GET /jobs/{id}/logs``."""
    since = 0
    status: str | None = None
    progress: tuple[Any, ...] | None = None
    loss_step = -1
    eval_metrics: dict[str, float] = {}
    while True:
        job = session.get_as(Job, f"/jobs/{job_id}")
        while True:
            log = session.get_as(JobLog, f"/jobs/{job_id}/logs", params={"since": since})
            for entry in log.items:
                at = entry.at.isoformat()
                if entry.kind == "log":
                    yield JobStreamEvent("log", {"message": entry.message, "at": at})
                else:
                    status = entry.kind
                    yield JobStreamEvent(
                        "status", {"status": entry.kind, "at": at, "message": entry.message}
                    )
            since = log.next_since
            if not log.items:
                break
        if job.status != status:
            status = job.status
            yield JobStreamEvent("status", {"status": status, "at": _now(), "message": ""})
        current = job.progress
        key = (current.global_step, current.max_steps, current.steps_per_sec, current.eta_s)
        if key != progress:
            progress = key
            yield JobStreamEvent("progress", {**current.model_dump(), "at": _now()})
        for point in job.metrics.train:
            if point.step > loss_step:
                loss_step = point.step
                yield JobStreamEvent("loss", point.model_dump())
        if job.metrics.eval and job.metrics.eval != eval_metrics:
            eval_metrics = dict(job.metrics.eval)
            yield JobStreamEvent("eval", {"metrics": eval_metrics})
        if job.status in TERMINAL_STATUSES or job.status == JobStatus.suspended:
            yield JobStreamEvent("end", job.model_dump(mode="json"))
            return
        time.sleep(interval_s)
