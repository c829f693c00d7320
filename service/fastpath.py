"""GET /jobs/{id} answered from memory, before the framework, when both caches can.

The hottest route's work is two dictionary reads once its caches are warm (the caller's
key in service/auth.py's KeyCache, the job's JSON in service/jobcache.py's JobCache);
the framework around it (routing, dependency resolution, the response object) cost
most of its time per request (bench/RESULTS.md, measurement 4). This ASGI middleware
answers the request itself when the key is cached as valid and the job's JSON is
fresh in the caller's scope (service/jobcache.py): the same status, body and headers
as the route. Anything else (no key, an unknown or revoked one, a job not in memory in
that scope, which another tenant's job never is, a query string) goes on to the route,
which answers as it always did.
"""

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from k2e.tenancy.keys import key_hash
from service.auth import KeyCache, bearer_key
from service.auth import scope as caller_scope
from service.jobcache import JobCache
from service.metrics.http import TALLY, start_flushing

_PREFIX = "/jobs/"
ROUTE = "/jobs/{job_id}"  # the route it answers for (service/routes/jobs.py)


class JobReadFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            started = time.perf_counter()
            body = cached_answer(scope)
            if body is not None:
                await send(_start(len(body)))
                await send({"type": "http.response.body", "body": body})
                # Counted here: the request never reaches service.metrics' middleware.
                TALLY.add("GET", ROUTE, "200", time.perf_counter() - started)
                start_flushing()
                return
        await self.app(scope, receive, send)


def cached_answer(scope: Scope) -> bytes | None:
    path: str = scope["path"]
    if not path.startswith(_PREFIX) or scope.get("query_string"):
        return None
    job_id = path[len(_PREFIX) :]
    if not job_id or "/" in job_id:
        return None
    key = bearer_key(authorization_header(scope))
    if key is None:
        return None
    state = scope["app"].state
    keys: KeyCache = state.key_cache
    known, caller = keys.get(key_hash(key))
    if not known or caller is None:
        return None
    jobs: JobCache = state.job_cache
    # Looked up in the caller's own scope: another tenant's job is never found here.
    return jobs.fresh(caller_scope(caller), job_id)


def authorization_header(scope: Scope) -> str | None:
    """The first ``Authorization`` header, as the route's ``request.headers`` reads it."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None


def _start(length: int) -> Message:
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-length", str(length).encode()),
            (b"content-type", b"application/json"),
        ],
    }
