"""Tenants and API keys: admin routes, and every caller's own tenant (``/tenants/me``)."""

import re

from fastapi import APIRouter, Depends, Request, Response, status
from starlette.convertors import Convertor, register_url_convertor

from k2e.errors import Conflict, NotFound
from k2e.tenancy.bodies import (
    TENANT_NAME_PATTERN,
    ApiKey,
    ApiKeyCreated,
    KeyCreate,
    Tenant,
    TenantCreate,
    check_quotas,
)
from k2e.tenancy.scope import ANY_TENANT
from service.auth import AdminDep, CallerDep, KeyCache, SessionCache, current_caller
from service.deps import BackendDep
from service.problems import problems


class TenantNameConvertor(Convertor[str]):
    """A tenant's name in a path, but not "me": /tenants/me is the caller's own tenant
    (GET), never a tenant named "me" to delete."""

    regex = r"(?!me$)[a-z0-9][a-z0-9_-]{0,62}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("tenant_name", TenantNameConvertor())

router = APIRouter(
    tags=["tenants"], dependencies=[Depends(current_caller)], responses=problems(401, 403)
)


@router.post(
    "/tenants",
    status_code=status.HTTP_201_CREATED,
    response_model=Tenant,
    responses=problems(400, 409, 422),
    summary="Create a tenant, optionally with its own quotas (admin)",
    operation_id="createTenant",
)
def create_tenant(body: TenantCreate, backend: BackendDep, _: AdminDep) -> Tenant:
    check_quotas(body.quotas, backend.settings.priority_values)
    backend.tenants.create_tenant(body.name, body.quotas)
    backend.storage.for_tenant(body.name)
    return backend.tenants.get_tenant(body.name, with_usage=True)


@router.get(
    "/tenants",
    response_model=list[Tenant],
    summary="Every tenant with its quotas and usage (admin)",
    operation_id="listTenants",
)
def list_tenants(backend: BackendDep, _: AdminDep) -> list[Tenant]:
    return backend.tenants.list_tenants()


@router.get(
    "/tenants/me",
    response_model=Tenant,
    summary="The caller's tenant: its quotas and what it uses",
    operation_id="getMyTenant",
)
def my_tenant(backend: BackendDep, caller: CallerDep) -> Tenant:
    return backend.tenants.get_tenant(caller.tenant, with_usage=True)


@router.post(
    "/tenants/{name}/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses=problems(400, 404, 422),
    summary="Create an API key for a tenant; the secret is shown in this answer only (admin)",
    operation_id="createKey",
)
def create_key(
    name: str, body: KeyCreate, response: Response, backend: BackendDep, _: AdminDep
) -> ApiKeyCreated:
    # The answer carries the key's secret: no cache may keep it.
    response.headers["Cache-Control"] = "no-store"
    return backend.tenants.create_key(name[:64], body.name, body.role)


@router.delete(
    "/tenants/{name:tenant_name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404, 409),
    summary="Delete a tenant with its keys, uploads, jobs and files (admin)",
    operation_id="deleteTenant",
)
def delete_tenant(name: str, request: Request, backend: BackendDep, caller: AdminDep) -> Response:
    """Removes the tenant's keys (their dashboard sessions end), its uploads, jobs, logs
    and events, and its folder of files. 409 while it has a job queued or running (cancel
    them and wait for them to end), and for the calling key's own tenant."""
    if not re.fullmatch(TENANT_NAME_PATTERN, name):
        raise NotFound(f"no tenant named {name[:64]!r}")
    if name == caller.tenant:
        raise Conflict(
            f"tenant {name!r} is the calling key's own: delete it with an admin key of "
            "another tenant"
        )
    key_ids = backend.tenants.delete_tenant(name)
    # Its keys and their dashboard sessions stop working here at once (elsewhere within
    # key_cache_s, as a revoked key does).
    key_cache: KeyCache = request.app.state.key_cache
    session_cache: SessionCache = request.app.state.session_cache
    for key_id in key_ids:
        key_cache.forget_key(key_id)
    session_cache.forget_keys(set(key_ids))
    # The rows are gone first: no upload or job of the tenant can start while this runs.
    backend.storage.remove_tree(backend.storage.base / "tenants" / name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/keys",
    response_model=list[ApiKey],
    summary="Every API key, never its secret (admin)",
    operation_id="listKeys",
)
def list_keys(backend: BackendDep, _: AdminDep) -> list[ApiKey]:
    return backend.tenants.list_keys(ANY_TENANT)


@router.delete(
    "/keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404),
    summary="Revoke an API key (admin): it stops working at once",
    operation_id="revokeKey",
)
def revoke_key(key_id: str, request: Request, backend: BackendDep, _: AdminDep) -> Response:
    revoked = backend.tenants.revoke_key(key_id[:32])
    # The key and the dashboard sessions opened with it stop working here at once.
    key_cache: KeyCache = request.app.state.key_cache
    session_cache: SessionCache = request.app.state.session_cache
    key_cache.forget_key(revoked.id)
    session_cache.forget_keys({revoked.id})
    return Response(status_code=status.HTTP_204_NO_CONTENT)
