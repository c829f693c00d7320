"""The Celery app workers run: ``celery -A worker.app worker -Q cpu``."""

import logging
from typing import Any

from celery.signals import worker_process_init

from k2e.queueing import make_celery
from k2e.settings import get_settings

settings = get_settings()
app = make_celery(settings, name="k2e-worker")
app.conf.include = ["worker.tasks"]

log = logging.getLogger("k2e.worker")


@worker_process_init.connect
def _load_tensorflow(**_: Any) -> None:
    """Import TensorFlow once per worker process, before the first job arrives."""
    from worker import tasks

    tasks.runner()
    log.info("worker process ready: TensorFlow loaded")
