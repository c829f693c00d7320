"""The scheduler's answers: a queued job's place (``Job.scheduling``) and each queue's
state (``GET /queues``, admins)."""

from typing import Literal

from pydantic import BaseModel, Field

WaitingFor = Literal["slot", "tenant_limit", "share", "worker", "pickup"]


class QueuePlace(BaseModel):
    """Where a queued job stands (k2e.jobs.placement); never names another job."""

    position: int | None = Field(
        description="1 + the waiting jobs of its queue, any tenant's, that the scheduler "
        "considers before it now; null once it is handed to a worker's queue (`pickup`, "
        "`worker`)."
    )
    priority: str = Field(description="Its priority class.")
    waiting_for: WaitingFor = Field(
        description="Why it has not started: `slot`, every job slot of its queue is taken "
        "(it starts when one frees, or when a lower-priority or borrowing job yields one); "
        "`tenant_limit`, its tenant has K2E_TENANT_INFLIGHT_JOBS jobs handed over already; "
        "`share`, its tenant holds its whole share of the queue and may not borrow; "
        "`worker`, no live worker consumes its queue (e.g. no GPU worker for a `gpu` job); "
        "`pickup`, handed over: a worker takes it next."
    )


class TenantInQueue(BaseModel):
    tenant: str
    share: int = Field(description="Its guaranteed job slots of the queue (quota `share`).")
    running: int = Field(description="Slots it holds: jobs handed over and not ended.")
    waiting: int = Field(description="Its jobs waiting to be handed over.")
    borrowed: int = Field(description="Slots it holds beyond its share.")


class QueueSummary(BaseModel):
    name: str
    slots: int = Field(
        description="Job slots of the live workers that consume the queue; 0: none is "
        "known, and handed-over jobs wait in the broker for one."
    )
    running: int = Field(
        description="Slots taken: jobs handed over and not ended (waiting in the broker for "
        "a worker, running, or cancelling)."
    )
    waiting: int = Field(description="Jobs waiting to be handed over (suspended ones not).")
    borrowed: int = Field(description="Slots held beyond their tenants' shares.")
    tenants: list[TenantInQueue] = Field(description="The same per tenant with jobs there.")
