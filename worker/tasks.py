"""Celery tasks: thin wrappers around worker.training."""

from functools import lru_cache
from typing import TYPE_CHECKING

from k2e.settings import get_settings
from k2e.tasks import TRAIN_TASK
from worker.app import app

if TYPE_CHECKING:
    from worker.training import JobRunner


@lru_cache(maxsize=1)
def runner() -> "JobRunner":
    """This process's JobRunner; the first call imports TensorFlow."""
    from worker.training import JobRunner

    return JobRunner(get_settings())


@app.task(name=TRAIN_TASK)
def train_job(job_id: str) -> None:
    runner().run(job_id)
