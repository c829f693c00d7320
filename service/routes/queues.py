"""The scheduler's queues and the fleet of workers, as admins see them."""

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from k2e.jobs.workers import WorkerRegistry
from k2e.queue_schemas import QueueSummary, WorkerSummary
from service.auth import AdminDep, current_caller
from service.deps import BackendDep
from service.problems import problems

router = APIRouter(dependencies=[Depends(current_caller)], responses=problems(401, 403))


@router.get(
    "/queues",
    response_model=list[QueueSummary],
    summary="Each queue's job slots (its live workers'), the jobs holding them, the jobs "
    "waiting, and the slots borrowed beyond tenants' shares, per tenant too (admin)",
    operation_id="listQueues",
    tags=["queues"],
)
async def list_queues(backend: BackendDep, _: AdminDep) -> list[QueueSummary]:
    return await run_in_threadpool(backend.placement.queues)


@router.get(
    "/workers",
    response_model=list[WorkerSummary],
    summary="The workers in the registry, newest first: node, queues, accelerator, version, "
    "current job, memory, last heartbeat, and whether each is live or lost (admin)",
    operation_id="listWorkers",
    tags=["workers"],
)
async def list_workers(backend: BackendDep, _: AdminDep) -> list[WorkerSummary]:
    registry = WorkerRegistry(backend.store.engine)
    return await run_in_threadpool(registry.summaries, backend.settings.worker_live_s)
