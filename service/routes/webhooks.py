"""Webhooks: a tenant's endpoints for job events, a test event, and their deliveries. A
member sees its tenant's endpoints only; another tenant's id is not found."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from k2e.errors import NotFound
from k2e.webhooks.schemas import Delivery, Webhook, WebhookCreate, WebhookCreated
from service.auth import CallerDep, current_caller, list_scope, scope
from service.deps import BackendDep
from service.params import TenantFilter
from service.problems import problems

router = APIRouter(
    tags=["webhooks"], dependencies=[Depends(current_caller)], responses=problems(401)
)


async def _webhook_id(webhook_id: str) -> str:
    # An id k2e cannot have is unknown (404), and never reaches the store's driver.
    if len(webhook_id) > 32 or not (webhook_id.isascii() and webhook_id.replace("_", "").isalnum()):
        raise NotFound(f"no webhook with id {webhook_id[:32]!r}")
    return webhook_id


WebhookId = Annotated[str, Depends(_webhook_id)]


@router.post(
    "/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    responses=problems(400, 409, 422),
    summary="Register an endpoint for job events; the answer shows its signing secret, "
    "once. A URL that is not http(s) or whose host resolves to a loopback, private, "
    "link-local, multicast, reserved or metadata address is refused (422)",
    operation_id="createWebhook",
)
def create_webhook(body: WebhookCreate, backend: BackendDep, caller: CallerDep) -> WebhookCreated:
    backend.webhook_targets.check(body.url)
    return backend.webhooks.create(caller.tenant, body.url, body.events)


@router.get(
    "/webhooks",
    response_model=list[Webhook],
    responses=problems(403, 422),
    summary="The tenant's webhook endpoints, newest first (never their secrets)",
    operation_id="listWebhooks",
)
def list_webhooks(
    backend: BackendDep, caller: CallerDep, tenant: TenantFilter = None
) -> list[Webhook]:
    return backend.webhooks.list_for(list_scope(caller, tenant))


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404),
    summary="Delete an endpoint; its deliveries still pending are not sent",
    operation_id="deleteWebhook",
)
def delete_webhook(webhook_id: WebhookId, backend: BackendDep, caller: CallerDep) -> Response:
    backend.webhooks.delete(webhook_id, scope(caller))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/webhooks/{webhook_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Delivery,
    responses=problems(404),
    summary="Queue a `webhook.test` event for the endpoint; its delivery",
    operation_id="testWebhook",
)
def test_webhook(webhook_id: WebhookId, backend: BackendDep, caller: CallerDep) -> Delivery:
    return backend.webhooks.send_test(webhook_id, scope(caller))


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=list[Delivery],
    responses=problems(404, 422),
    summary="The endpoint's deliveries, newest first: state, attempts, the latest "
    "answer (status, a bounded excerpt of its body, or the error) and the next attempt",
    operation_id="listWebhookDeliveries",
)
def list_deliveries(
    webhook_id: WebhookId,
    backend: BackendDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[Delivery]:
    return backend.webhooks.deliveries(webhook_id, scope(caller), limit)
