"""The scheduler's answers: a queued job's place (``Job.scheduling``), each queue's
state (``GET /queues``, admins) and the fleet of workers (``GET /workers``, admins)."""

from datetime import datetime
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


class WorkerSummary(BaseModel):
    """One worker (a Celery worker and its pool) as its heartbeats in the registry say."""

    name: str = Field(description="`<host>:<pid>` of its main process; its log lines' `worker`.")
    node: str = Field(description="The host it runs on.")
    queues: list[str] = Field(description="The queues it consumes.")
    slots: int = Field(description="Its job slots (its pool's processes).")
    accelerator: Literal["cpu", "gpu"] = Field(
        description="`gpu` when the node shows an NVIDIA device, else `cpu`."
    )
    version: str = Field(description="The k2e release it runs.")
    current_job: str | None = Field(
        description="The id of the job it runs (the first, with several slots); null when idle."
    )
    current_jobs: list[str] = Field(description="Every job its pool runs, at its last heartbeat.")
    rss_bytes: int | None = Field(
        description="Resident memory of its processes (main and pool), at its last heartbeat."
    )
    started_at: datetime = Field(description="When it registered.")
    last_heartbeat: datetime
    state: Literal["live", "lost"] = Field(
        description="`live`: seen within three heartbeats (K2E_WORKER_HEARTBEAT_S); `lost`: "
        "silent longer (killed, or cut off from the store). The scheduler counts the job "
        "slots of live workers only; a clean shutdown removes the worker."
    )
