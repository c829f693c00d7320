"""The bodies of the webhook routes, and the event types a webhook can be sent."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator


class EventType(StrEnum):
    """What happened to a job: it ended (three ways), was suspended, or yielded its
    worker to a higher-priority job."""

    succeeded = "job.succeeded"
    failed = "job.failed"
    cancelled = "job.cancelled"
    suspended = "job.suspended"
    preempted = "job.preempted"


# Sent by POST /webhooks/{id}/test only: no webhook subscribes to it.
TEST_EVENT = "webhook.test"


class WebhookCreate(BaseModel):
    """A webhook endpoint to register."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[
        str,
        Field(
            min_length=1,
            max_length=2048,
            description="An http or https URL whose host resolves to public addresses only "
            "(or to ones `K2E_WEBHOOK_ALLOW_CIDRS` allows)",
        ),
    ]
    events: Annotated[
        list[EventType],
        Field(min_length=1, max_length=len(EventType), description="The event types it is sent"),
    ]

    @field_validator("events")
    @classmethod
    def _distinct(cls, value: list[EventType]) -> list[EventType]:
        if len(set(value)) != len(value):
            raise ValueError("each event type may be named once")
        return value


class Webhook(BaseModel):
    """A registered endpoint (its secret is shown only when it is created)."""

    id: str
    url: str
    events: list[EventType]
    created_at: datetime


class WebhookCreated(Webhook):
    """A new endpoint with its signing secret: the only time the secret is shown."""

    secret: str = Field(description="The HMAC-SHA256 key of the `K2E-Signature` header")


class Delivery(BaseModel):
    """One event sent (or being sent) to one endpoint, with its latest attempt's answer."""

    id: str
    webhook_id: str
    event_id: str = Field(description="The `K2E-Event-Id` header: the same on every attempt")
    type: str
    state: str = Field(description="`pending` (retried until answered), `delivered`, `failed`")
    created_at: datetime
    attempts: int
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = Field(description="When it is tried next, if pending")
    response_status: int | None = Field(description="The HTTP status of the latest attempt")
    response_excerpt: str | None = Field(description="The start of the latest response body")
    error: str | None = Field(description="Why the latest attempt failed, if it did")
    delivered_at: datetime | None
