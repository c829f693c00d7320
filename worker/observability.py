"""The worker's logs and traces (k2e.logs, k2e.tracing), wired to Celery's signals.

- ``K2E_LOG_FORMAT=json``: k2e configures logging instead of Celery (its
  ``setup_logging`` signal), in the main process and again in each pool process.
- Each line carries ``worker`` (the registry's ``<host>:<pid>`` of the main process, as
  ``GET /workers`` names it) and, while a job runs, its ``job_id``, ``request_id`` (the
  task's ``k2e_request_id`` header) and ``tenant``. They are bound from the task's start
  until after Celery's own "succeeded" line (task_prerun to task_postrun).
- In JSON, Celery's "Received task" line (written before k2e can see the task's
  headers) gives way to k2e's own "received" line carrying the request id.
- With tracing on, each pool process records its spans, exported at the end of each task.
"""

import logging
import os
import socket
from typing import Any

from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    task_received,
    worker_process_init,
)

from k2e import logs, tracing
from k2e.jobs.queueing import REQUEST_ID_HEADER, TRAIN_TASK
from k2e.settings import Settings

log = logging.getLogger("k2e.worker")


def install(settings: Settings) -> None:
    """Connect the handlers this worker's settings call for. Called in the main process
    at start: pool processes inherit its ``worker`` field."""
    logs.bind_process(worker=f"{socket.gethostname()}:{os.getpid()}")
    if settings.log_format == "json":
        setup_logging.connect(_json_logs, weak=False)
        task_received.connect(_received, weak=False)
    task_prerun.connect(_bind_task, weak=False)
    task_postrun.connect(_unbind_task, weak=False)

    def start_tracing(**_: Any) -> None:
        tracing.setup(settings, "worker")

    worker_process_init.connect(start_tracing, weak=False)


def _json_logs(loglevel: Any = None, **_: Any) -> None:
    level = loglevel if isinstance(loglevel, int) and loglevel else logging.INFO
    logs.use_json_logs(level)
    # Without the task's headers: k2e's own line (_received) says it instead.
    logging.getLogger("celery.worker.strategy").setLevel(logging.WARNING)


def request_id_of(request: Any) -> str | None:
    """The submission's request id from a task request's headers (None: not sent)."""
    value = getattr(request, REQUEST_ID_HEADER, None)
    if value is None and isinstance(getattr(request, "headers", None), dict):
        value = request.headers.get(REQUEST_ID_HEADER)
    return value if isinstance(value, str) else None


def _received(request: Any = None, **_: Any) -> None:
    if request is None or request.name != TRAIN_TASK:
        return
    headers = request.request_dict
    with logs.bound(job_id=request.id, request_id=headers.get(REQUEST_ID_HEADER)):
        log.info("job %s: received from the broker", request.id)


def _bind_task(task_id: str = "", task: Any = None, **_: Any) -> None:
    if task is None or task.name != TRAIN_TASK:
        return
    logs.bind_process(job_id=task_id, request_id=request_id_of(task.request))


def _unbind_task(task: Any = None, **_: Any) -> None:
    if task is None or task.name != TRAIN_TASK:
        return
    logs.bind_process(job_id=None, request_id=None, tenant=None)
    tracing.flush()
