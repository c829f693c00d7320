"""Tenants' webhook endpoints and their deliveries, as the API reads and changes them.

Every read by id takes a ``Scope`` (k2e.tenancy.scope): another tenant's endpoint is not
found, exactly like an unknown id.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.engine import RowMapping

from k2e.db import aware, utcnow
from k2e.errors import Conflict, NotFound
from k2e.tables import webhook_deliveries, webhooks
from k2e.tenancy.scope import Scope, tenant_of
from k2e.webhooks import outbox
from k2e.webhooks.schemas import TEST_EVENT, Delivery, EventType, Webhook, WebhookCreated
from k2e.webhooks.signing import new_secret

MAX_DELIVERIES = 200


class WebhookStore:
    def __init__(self, engine: Engine, max_per_tenant: int) -> None:
        self.engine = engine
        self.max_per_tenant = max_per_tenant

    def create(self, tenant: str, url: str, events: list[EventType]) -> WebhookCreated:
        """Register an endpoint (its URL already checked); Conflict past the limit."""
        hook = WebhookCreated(
            id="wh_" + secrets.token_hex(8),
            url=url,
            events=events,
            created_at=utcnow(),
            secret=new_secret(),
        )
        with self.engine.begin() as conn:
            count = conn.execute(
                select(func.count()).where(webhooks.c.tenant == tenant)
            ).scalar_one()
            if count >= self.max_per_tenant:
                raise Conflict(
                    f"the tenant has {count} webhooks, the most it may have "
                    "(K2E_WEBHOOK_MAX_PER_TENANT): delete one first"
                )
            conn.execute(
                insert(webhooks).values(
                    id=hook.id,
                    tenant=tenant,
                    url=url,
                    events=[e.value for e in events],
                    secret=hook.secret,
                    created_at=hook.created_at,
                )
            )
        return hook

    def list_for(self, scope: Scope) -> list[Webhook]:
        """The endpoints in ``scope``, newest first."""
        query = select(webhooks).order_by(webhooks.c.seq.desc())
        tenant = tenant_of(scope)
        if tenant is not None:
            query = query.where(webhooks.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [_webhook(row) for row in conn.execute(query).mappings()]

    def get(self, hook_id: str, scope: Scope) -> Webhook:
        return _webhook(self._row(hook_id, scope))

    def delete(self, hook_id: str, scope: Scope) -> None:
        """Forget the endpoint and its deliveries (pending ones are not sent)."""
        self._row(hook_id, scope)
        with self.engine.begin() as conn:
            conn.execute(
                delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == hook_id)
            )
            conn.execute(delete(webhooks).where(webhooks.c.id == hook_id))

    def send_test(self, hook_id: str, scope: Scope) -> Delivery:
        """Queue a ``webhook.test`` event for the endpoint alone; its delivery."""
        row = self._row(hook_id, scope)
        data = {"webhook": {"id": row["id"], "url": row["url"]}}
        with self.engine.begin() as conn:
            (delivery_id,) = outbox.enqueue(conn, row["tenant"], [hook_id], TEST_EVENT, data)
        return self.delivery(delivery_id)

    def deliveries(self, hook_id: str, scope: Scope, limit: int = 50) -> list[Delivery]:
        """The endpoint's deliveries, newest first."""
        self._row(hook_id, scope)
        query = (
            select(webhook_deliveries)
            .where(webhook_deliveries.c.webhook_id == hook_id)
            .order_by(webhook_deliveries.c.seq.desc())
            .limit(max(1, min(limit, MAX_DELIVERIES)))
        )
        with self.engine.connect() as conn:
            return [delivery(row) for row in conn.execute(query).mappings()]

    def delivery(self, delivery_id: str) -> Delivery:
        query = select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            raise NotFound(f"no delivery with id {delivery_id!r}")
        return delivery(row)

    def _row(self, hook_id: str, scope: Scope) -> RowMapping:
        query = select(webhooks).where(webhooks.c.id == hook_id)
        tenant = tenant_of(scope)
        if tenant is not None:
            query = query.where(webhooks.c.tenant == tenant)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            raise NotFound(f"no webhook with id {hook_id!r}")
        return row


def _webhook(row: RowMapping) -> Webhook:
    return Webhook(
        id=row["id"],
        url=row["url"],
        events=[EventType(e) for e in row["events"]],
        created_at=aware(row["created_at"]),  # type: ignore[arg-type]
    )


def delivery(row: RowMapping) -> Delivery:
    times: dict[str, Any] = {
        name: aware(row[name])
        for name in ("created_at", "last_attempt_at", "next_attempt_at", "delivered_at")
    }
    if row["state"] != outbox.PENDING:
        times["next_attempt_at"] = None
    return Delivery(
        id=row["id"],
        webhook_id=row["webhook_id"],
        event_id=row["event_id"],
        type=row["type"],
        state=row["state"],
        attempts=row["attempts"],
        response_status=row["response_status"],
        response_excerpt=row["response_excerpt"],
        error=row["error"],
        **times,
    )
