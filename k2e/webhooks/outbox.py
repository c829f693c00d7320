"""Webhook events enter the outbox in the transaction that changes the job.

k2e.jobs.rows.add_event calls ``emit`` for every transition a webhook can report: the
delivery rows commit with the job's new status or not at all, so an event is neither
lost by a crash between the two nor sent for a change that was rolled back. The body
is made here, once: every attempt sends (and signs) the same bytes.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from k2e.db import utcnow
from k2e.jobs.records import JobRecord
from k2e.tables import jobs, webhook_deliveries, webhooks
from k2e.webhooks.schemas import EventType

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
# The transitions (a status add_event writes) that are webhook events by themselves;
# a preemption is a move back to "queued", which its caller names.
BY_STATUS = {
    "succeeded": EventType.succeeded,
    "failed": EventType.failed,
    "cancelled": EventType.cancelled,
    "suspended": EventType.suspended,
}


def event_body(event_id: str, kind: str, at: datetime, data: dict[str, Any]) -> str:
    """The JSON a delivery sends: ``{"id", "type", "created_at", "data"}``."""
    body = {"id": event_id, "type": kind, "created_at": at.isoformat(), "data": data}
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def enqueue(
    conn: Connection, tenant: str, hooks: list[str], kind: str, data: dict[str, Any]
) -> list[str]:
    """One delivery per endpoint of one event; returns the deliveries' ids."""
    now = utcnow()
    event_id = "evt_" + secrets.token_hex(12)
    body = event_body(event_id, kind, now, data)
    rows: list[dict[str, Any]] = [
        {
            "id": "whd_" + secrets.token_hex(12),
            "webhook_id": hook,
            "tenant": tenant,
            "event_id": event_id,
            "type": kind,
            "body": body,
            "created_at": now,
            "state": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
        }
        for hook in hooks
    ]
    if rows:
        conn.execute(insert(webhook_deliveries), rows)
    return [row["id"] for row in rows]


def emit(conn: Connection, job_id: str, kind: EventType) -> None:
    """Queue ``kind`` for the job's tenant's endpoints subscribed to it (none: nothing)."""
    row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
    if row is None or row["tenant"] is None:
        return
    subscribed = conn.execute(
        select(webhooks.c.id, webhooks.c.events).where(webhooks.c.tenant == row["tenant"])
    ).all()
    hooks = [hook.id for hook in subscribed if kind.value in hook.events]
    if hooks:
        job = JobRecord.from_row(row).public().model_dump(mode="json")
        enqueue(conn, row["tenant"], hooks, kind.value, {"job": job})
