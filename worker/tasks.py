"""Celery tasks: thin wrappers that hand the job to this process's JobRunner (celery_app.runner)."""

from typing import Any

from k2e import tracing
from k2e.cluster_schemas import Role
from k2e.jobs.predictions import PREDICT_TASK
from k2e.jobs.queueing import MEMBER_TASK, TRAIN_TASK
from worker.celery_app import app, runner


@app.task(name=TRAIN_TASK, bind=True)
def train_job(self: Any, job_id: str) -> None:
    # The job's span continues the submission's trace (the enqueue span's context).
    parent = getattr(self.request, tracing.TRACEPARENT, None)
    with tracing.span("job", parent=parent if isinstance(parent, str) else None, job_id=job_id):
        runner().run(job_id)


@app.task(name=PREDICT_TASK)
def predict_job(
    job_id: str, tenant: str, instances: list[Any], signature: str | None, reply_key: str
) -> None:
    runner().predict(job_id, tenant, instances, signature, reply_key)


@app.task(name=MEMBER_TASK)
def cluster_member(job_id: str, gang: int, role: Role, index: int) -> None:
    from worker.cluster_member import run_member

    run_member(runner(), job_id, gang, role, index)
