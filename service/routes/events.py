"""GET /jobs/{id}/events: the job's event stream (server-sent events, service/event_feeds.py)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from service import job_files
from service.auth import CallerDep, caller_check, current_caller, scope
from service.deps import BackendDep
from service.event_feeds import EventBroker, event_stream
from service.params import JobId
from service.problems import problems

router = APIRouter(tags=["jobs"], dependencies=[Depends(current_caller)], responses=problems(401))

_MAX_ID = 2**63 - 1
# A stream asks whether its caller is still signed in every key_cache_s, and no more often
# than this (key_cache_s may be 0: no caching).
_MIN_RECHECK_S = 1.0
_SSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "Server-sent events, each with `id`, `event` (`status`, `progress`, "
        "`loss`, `log`, `eval`, `end`) and one line of JSON `data`; the stream closes "
        "after `end`, whose data is the job as `GET /jobs/{job_id}` shows it. A "
        "`: keep-alive` comment is sent every 15 s while nothing happens.",
    }
}


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={**_SSE, **problems(404, 422)},
    summary="The job's events, history then live (server-sent events); resume with `Last-Event-ID`",
    operation_id="streamJobEvents",
)
async def job_events(
    job_id: JobId,
    backend: BackendDep,
    caller: CallerDep,
    request: Request,
    last_event_id_header: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            le=_MAX_ID,
            description="Send only the events after this id (what a reconnecting "
            "EventSource sends)",
        ),
    ] = None,
    last_event_id: Annotated[
        int | None,
        Query(
            ge=0,
            le=_MAX_ID,
            description="The same as the `Last-Event-ID` header, for clients that cannot set "
            "headers; the header wins when both are given",
        ),
    ] = None,
) -> StreamingResponse:
    broker: EventBroker = request.app.state.event_broker
    # Unknown ids and other tenants' jobs are 404 before the stream starts.
    job = await broker.run(backend.store.get, job_id, scope(caller))
    sent = last_event_id_header if last_event_id_header is not None else last_event_id
    # Ids are numbers within the job; one from before that (a larger one) is translated.
    after = await broker.run(backend.store.resume_point, job_id, sent or 0)
    clean = job_files.message_filter(backend, job, caller)
    # A stream outlives its request's authentication: it checks again as it goes and
    # closes once the key is revoked or the dashboard session has ended.
    recheck_s = max(backend.settings.key_cache_s, _MIN_RECHECK_S)
    show = job_files.member_view(backend) if not caller.is_admin else (lambda job: job)
    stream = event_stream(
        broker, job_id, after, clean, show, caller_check(request, caller), recheck_s
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        # No caching, and no buffering by a reverse proxy (nginx honours this header).
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
