"""Tenants and API keys: admin routes, and every caller's own tenant (``/tenants/me``)."""

from fastapi import APIRouter, Depends, Request, Response, status

from k2e.tenancy.models import ApiKey, ApiKeyCreated, KeyCreate, Tenant, TenantCreate
from service.auth import AdminDep, CallerDep, KeyCache, current_caller
from service.deps import BackendDep
from service.problems import problems

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
def create_key(name: str, body: KeyCreate, backend: BackendDep, _: AdminDep) -> ApiKeyCreated:
    return backend.tenants.create_key(name[:64], body.name, body.role)


@router.get(
    "/keys",
    response_model=list[ApiKey],
    summary="Every API key, never its secret (admin)",
    operation_id="listKeys",
)
def list_keys(backend: BackendDep, _: AdminDep) -> list[ApiKey]:
    return backend.tenants.list_keys()


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
    cache: KeyCache = request.app.state.key_cache
    cache.forget_key(revoked.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
