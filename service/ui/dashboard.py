"""The dashboard's routes: its pages, its static files, and its sessions (an API key
exchanged for an HttpOnly, SameSite=Strict cookie; service/auth.py accepts the cookie).

Every page is the same small HTML shell; the ES modules under ``static/`` draw it from the
API's JSON. A job page of a job the signed-in caller cannot see answers 404 outright.
"""

import html
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from k2e.errors import NotFound, Unauthenticated
from k2e.tenancy.bodies import Caller, Role
from k2e.tenancy.keys import key_hash
from k2e.tenancy.sessions import Session
from service.auth import (
    CSRF_HEADER,
    SESSION_COOKIE,
    SessionCache,
    current_session,
    scope,
    session_caller,
)
from service.deps import BackendDep
from service.params import JobId

STATIC = Path(__file__).parent / "static"
SHELL = (STATIC / "index.html").read_bytes()
NOT_FOUND = (STATIC / "404.html").read_bytes()
# No inline script or style, nothing from elsewhere, never framed (clickjacking).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
# On every answer that carries a session's CSRF token.
NO_STORE = {"Cache-Control": "no-store"}
PAGES = ("", "/", "/jobs", "/models", "/datasets", "/submit", "/queues", "/webhooks", "/signin")

router = APIRouter(prefix="/ui", include_in_schema=False)


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, Field(min_length=1, max_length=512)]


class SessionInfo(BaseModel):
    tenant: str
    role: Role
    csrf_token: str
    csrf_header: str = CSRF_HEADER
    expires_at: datetime


def _info(session: Session) -> SessionInfo:
    caller = session.caller
    return SessionInfo(
        tenant=caller.tenant,
        role=caller.role,
        csrf_token=session.csrf_token,
        expires_at=session.expires_at,
    )


def _shell(
    session: Session | None = None, job: bytes | None = None, status_code: int = 200
) -> HTMLResponse:
    """The page, with what its first render needs written into it (the session, the job):
    data only, never script, so the page renders without a round trip for them."""
    data = b""
    if session is not None:
        info = html.escape(_info(session).model_dump_json(), quote=True)
        data += f'<meta name="k2e-session" content="{info}">'.encode()
    if job is not None:
        # A JSON data block is not run; "<" escaped so no "</script>" can end it early.
        data += b'<script type="application/json" id="k2e-job">'
        data += job.replace(b"<", b"\\u003c") + b"</script>"
    body = SHELL.replace(b"<!--k2e:data-->", data)
    # A signed-in page carries the session's CSRF token (and the job): never stored.
    headers = PAGE_HEADERS if session is None else {**PAGE_HEADERS, **NO_STORE}
    return HTMLResponse(body, status_code=status_code, headers=headers)


async def _page(request: Request) -> HTMLResponse:
    return _shell(await current_session(request))


for _path in PAGES:
    router.add_api_route(_path, _page, methods=["GET"], response_class=HTMLResponse)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(job_id: JobId, request: Request, backend: BackendDep) -> HTMLResponse:
    session = await current_session(request)
    if session is None:
        return _shell()  # the page asks to sign in, then loads the job
    caller = session.caller
    try:
        job = await request.app.state.job_cache.read(backend.store, job_id, scope(caller))
    except NotFound:
        return HTMLResponse(NOT_FOUND, status_code=404, headers=PAGE_HEADERS)
    return _shell(session, job)


@router.get("/static/{name:path}")
async def static_file(name: str) -> FileResponse:
    try:
        path = (STATIC / name).resolve()
        found = path.is_file() and path.is_relative_to(STATIC) and name != "index.html"
    except OSError:  # a name longer than the file system takes (ENAMETOOLONG)
        found = False
    if not found:
        raise NotFound(f"no dashboard file {name[:200]!r}")
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, headers=headers)


@router.post("/session")
async def sign_in(body: SignIn, request: Request, backend: BackendDep) -> Response:
    """Exchange an API key for a session cookie (HttpOnly, SameSite=Strict)."""
    caller: Caller | None = await run_in_threadpool(backend.tenants.authenticate, body.key)
    if caller is None:
        raise Unauthenticated("the API key is not valid (unknown, mistyped or revoked)")
    opened = await run_in_threadpool(backend.sessions.open, caller)
    response = Response(
        _info(opened.session).model_dump_json(), media_type="application/json", headers=NO_STORE
    )
    response.set_cookie(
        SESSION_COOKIE,
        opened.token,
        max_age=backend.settings.session_ttl_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/session", response_model=SessionInfo)
async def who_am_i(request: Request, response: Response) -> SessionInfo:
    """The signed-in session, with the CSRF token its state-changing requests send."""
    session = await current_session(request)
    session_caller(request, session)
    assert session is not None
    response.headers.update(NO_STORE)
    return _info(session)


@router.delete("/session", status_code=204, response_class=Response)
async def sign_out(
    request: Request,
    backend: BackendDep,
    session: Annotated[Session | None, Depends(current_session)],
) -> Response:
    """End the session (CSRF token required, like every state-changing request)."""
    session_caller(request, session)
    token = request.cookies[SESSION_COOKIE]
    await run_in_threadpool(backend.sessions.revoke, token)
    cache: SessionCache = request.app.state.session_cache
    cache.forget(key_hash(token))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
