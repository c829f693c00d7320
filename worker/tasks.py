"""Celery tasks: thin wrappers around worker.training."""

from k2e.jobs.queueing import TRAIN_TASK
from worker.app import app
from worker.runner import runner


@app.task(name=TRAIN_TASK)
def train_job(job_id: str) -> None:
    runner().run(job_id)
