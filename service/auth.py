"""Who is calling: the bearer key of every request but /healthz and /readyz, or the
dashboard's session cookie (service/ui), which stands for the key it was opened with.

A cookie is sent by the browser on any request to k2e, including one a hostile page
makes it send: a request authenticated by the cookie alone that is not a GET, HEAD or
OPTIONS must echo the session's CSRF token in ``X-CSRF-Token`` (the double-submit rule).
A bearer key needs no token: no other site can make a browser add that header.

A key lookup is cached for ``key_cache_s`` (default 5 s) per API process, so that the
store is not read on every request; revoking a key clears it from the revoking
process's cache at once, and from every other process's within ``key_cache_s``.
"""

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import HTTPConnection

from k2e.errors import Forbidden, Unauthenticated
from k2e.tenancy.bodies import Caller
from k2e.tenancy.keys import key_hash
from k2e.tenancy.scope import ANY_TENANT, Scope
from k2e.tenancy.sessions import Session, SessionStore
from k2e.tenancy.tenant_store import TenantStore
from service.ttlcache import TtlCache

SESSION_COOKIE = "k2e_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def bearer_key(authorization: str | None) -> str | None:
    """The key an ``Authorization`` header value carries: ``Bearer <key>`` (the scheme in
    any case, the key stripped), or None (no header, another scheme, no key). The one
    reading of the header: the routes' (``current_caller``) and service/fastpath.py's."""
    scheme, key = get_authorization_scheme_param(authorization)
    return key if scheme.lower() == "bearer" and key else None


class _BearerKey(HTTPBearer):
    """Declares the scheme in the OpenAPI spec (as ``HTTPBearer``) and reads the key with
    ``bearer_key``; k2e answers a missing key itself (401)."""

    async def __call__(self, request: HTTPConnection) -> str | None:  # type: ignore[override]
        return bearer_key(request.headers.get("Authorization"))


_bearer = _BearerKey(
    auto_error=False,
    scheme_name="HTTPBearer",
    description="An API key: `Authorization: Bearer <key>`",
)


# The key a request carries, for a route that reads it itself (GET /metrics).
BearerKeyDep = Annotated[str | None, Depends(_bearer)]


class KeyCache(TtlCache[Caller]):
    """Key hash -> the caller it names, or None (unknown or revoked)."""

    def forget_key(self, key_id: str) -> None:
        """Forget the caller of a revoked key."""
        self.forget_where(lambda caller: caller.key_id == key_id)


class SessionCache(TtlCache[Session]):
    """Cookie hash -> the session it names, or None. Signing out forgets the entry in
    this process at once (``forget``)."""

    def forget_keys(self, key_ids: set[str]) -> None:
        """Forget the sessions opened with these keys (their tenant was deleted)."""
        self.forget_where(lambda session: session.caller.key_id in key_ids)


async def current_session(request: Request) -> Session | None:
    """The live session the request's cookie names, or None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await _session_of(request.app.state, token)


async def _session_of(state: Any, token: str) -> Session | None:
    cache: SessionCache = state.session_cache
    digest = key_hash(token)
    known, session = cache.get(digest)
    if not known:
        sessions: SessionStore = state.backend.sessions
        session = await run_in_threadpool(sessions.resolve, token)
        cache.put(digest, session)
    if session is not None and session.expires_at.timestamp() <= time.time():
        return None
    return session


def session_caller(request: Request, session: Session | None) -> Caller:
    if session is None:
        raise Unauthenticated(
            "this route needs an API key: `Authorization: Bearer <key>` "
            "(or a dashboard session: the cookie is missing, expired or signed out)"
            if SESSION_COOKIE in request.cookies
            else "this route needs an API key: `Authorization: Bearer <key>`"
        )
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
            raise Forbidden(
                f"a request authenticated by the session cookie must carry the session's "
                f"CSRF token in the `{CSRF_HEADER}` header (missing or wrong)"
            )
    return session.caller


async def current_caller(request: Request, key: Annotated[str | None, Depends(_bearer)]) -> Caller:
    request.state.credential = key
    if key is None:
        return session_caller(request, await current_session(request))
    caller = await _key_caller(request.app.state, key)
    if caller is None:
        raise Unauthenticated("the API key is not valid (unknown, mistyped or revoked)")
    return caller


async def _key_caller(state: Any, key: str) -> Caller | None:
    cache: KeyCache = state.key_cache
    digest = key_hash(key)
    known, caller = cache.get(digest)
    if not known:
        tenants: TenantStore = state.backend.tenants
        caller = await run_in_threadpool(tenants.authenticate, key)
        cache.put(digest, caller)
    return caller


def caller_check(request: Request, caller: Caller) -> Callable[[], Awaitable[bool]]:
    """For a long-lived response (an event stream): a check, to call again and again, of
    whether the credential the request came with (its key, or its session cookie) still
    stands for ``caller``. It reads through the same caches as a request does: a key
    revoked (or a session signed out) through this process fails the next check; through
    another process, once this one's cache entry has expired (``key_cache_s``)."""
    state = request.app.state
    key: str | None = getattr(request.state, "credential", None)  # set by current_caller
    token = request.cookies.get(SESSION_COOKIE, "")

    async def still_valid() -> bool:
        if key is not None:
            now = await _key_caller(state, key)
        else:
            session = await _session_of(state, token) if token else None
            now = session.caller if session is not None else None
        return now == caller

    return still_valid


async def admin_caller(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    if not caller.is_admin:
        raise Forbidden("this route is for admin keys")
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]
AdminDep = Annotated[Caller, Depends(admin_caller)]


def scope(caller: Caller) -> Scope:
    """The tenants a lookup by id sees: the caller's own; any tenant's for admins."""
    return ANY_TENANT if caller.is_admin else Scope.of(caller.tenant)


def list_scope(caller: Caller, tenant: str | None) -> Scope:
    """The tenants a list shows: the caller's own (``tenant`` not given); an admin may name
    another, or "*" for all."""
    if tenant is None or tenant == caller.tenant:
        return Scope.of(caller.tenant)
    if not caller.is_admin:
        raise Forbidden("only admin keys list other tenants' resources")
    return ANY_TENANT if tenant == "*" else Scope.of(tenant)
