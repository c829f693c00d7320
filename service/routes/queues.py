"""The scheduler's queues as admins see them: slots, jobs holding them, jobs waiting."""

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from k2e.queue_schemas import QueueSummary
from service.auth import AdminDep, current_caller
from service.deps import BackendDep
from service.problems import problems

router = APIRouter(
    tags=["queues"], dependencies=[Depends(current_caller)], responses=problems(401, 403)
)


@router.get(
    "/queues",
    response_model=list[QueueSummary],
    summary="Each queue's job slots (its live workers'), the jobs holding them, the jobs "
    "waiting, and the slots borrowed beyond tenants' shares, per tenant too (admin)",
    operation_id="listQueues",
)
async def list_queues(backend: BackendDep, _: AdminDep) -> list[QueueSummary]:
    return await run_in_threadpool(backend.placement.queues)
