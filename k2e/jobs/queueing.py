"""Queues and the Celery configuration both sides share; the one place a job is sent.

The API and the worker's reconciler send the training task by name (``TRAIN_TASK``),
so the API never imports worker code.
"""

import logging
from typing import Any

import redis
from celery import Celery
from kombu import Queue
from kombu.exceptions import OperationalError

from k2e import logs, tracing
from k2e.errors import Unavailable
from k2e.settings import Settings

TRAIN_TASK = "k2e.train_job"
# A cluster job's members other than its chief (the chief runs as TRAIN_TASK).
MEMBER_TASK = "k2e.cluster_member"
# The task header carrying the submission's X-Request-ID to the worker (k2e.logs).
REQUEST_ID_HEADER = "k2e_request_id"
CPU_QUEUE = "cpu"
log = logging.getLogger("k2e.dispatch")
GPU_QUEUE = "gpu"


def queue_for(accelerator: str) -> str:
    """The queue a job with this accelerator is routed to."""
    return GPU_QUEUE if accelerator == "gpu" else CPU_QUEUE


def make_celery(settings: Settings, name: str = "k2e") -> Celery:
    """A Celery app on k2e's broker with at-least-once delivery settings."""
    app = Celery(name, broker=settings.broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # job state lives in k2e's own store
        result_backend=None,
        # A task is acknowledged only once it has finished, and given back when its
        # worker dies, so a crash mid-training redelivers the job.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            # Sweep for unacknowledged messages past their visibility timeout every few
            # seconds (kombu's default scans about every 100 s).
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        # Publishing must fail fast when Redis is down: the API answers 503 rather than hang.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        task_queues=[Queue(CPU_QUEUE), Queue(GPU_QUEUE)],
        task_default_queue=CPU_QUEUE,
        # TensorFlow takes ~6 s to import in a fresh child; the default 4 s is too short.
        worker_proc_alive_timeout=120,
    )
    return app


def train_task_options(job_id: str, queue: str, timeout_s: int | None, grace_s: int) -> dict:
    """``send_task`` options for a job: its id, its queue, and Celery's time limits as a
    backstop behind the training hook's own deadline."""
    options: dict[str, Any] = {"task_id": job_id, "queue": queue}
    if timeout_s is not None:
        options["soft_time_limit"] = timeout_s + grace_s
        options["time_limit"] = timeout_s + 2 * grace_s
    return options


class TaskSender:
    """Sends jobs to the broker; raises Unavailable when it does not answer."""

    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        self._celery = celery if celery is not None else make_celery(settings, name="k2e-sender")
        self._url = settings.broker_url
        self._grace_s = settings.timeout_grace_s

    @property
    def celery(self) -> Celery:
        """The Celery app tasks are sent with (also POST /jobs/{id}/predict's)."""
        return self._celery

    def send_train(
        self,
        job_id: str,
        queue: str,
        timeout_s: int | None,
        request_id: str | None = None,
        trace_context: str | None = None,
    ) -> None:
        """Enqueue a job on ``queue``; its Celery time limits back ``timeout_s``. The
        task's headers carry the submission's request id and trace (k2e.tracing) to the
        worker."""
        options = train_task_options(job_id, queue, timeout_s, self._grace_s)
        with (
            logs.bound(request_id=request_id, job_id=job_id),
            tracing.span("enqueue", parent=trace_context, job_id=job_id, queue=queue),
        ):
            headers = {REQUEST_ID_HEADER: request_id} if request_id else {}
            traceparent = tracing.current_traceparent()
            if traceparent:
                headers[tracing.TRACEPARENT] = traceparent
            try:
                self._celery.send_task(TRAIN_TASK, args=[job_id], headers=headers, **options)
            except (OperationalError, redis.RedisError, OSError) as exc:
                raise Unavailable(f"the broker does not answer: {exc}") from exc
            log.info("job %s: handed to the %s queue", job_id, queue)

    def send_member(self, job_id: str, queue: str, gang: int, role: str, index: int) -> None:
        """Enqueue one non-chief member of a cluster job's placement ``gang``."""
        try:
            self._celery.send_task(
                MEMBER_TASK,
                args=[job_id, gang, role, index],
                task_id=f"{job_id}:{gang}:{role}:{index}",
                queue=queue,
            )
        except (OperationalError, redis.RedisError, OSError) as exc:
            raise Unavailable(f"the broker does not answer: {exc}") from exc

    def ping(self) -> None:
        try:
            client = redis.Redis.from_url(self._url, socket_timeout=1, socket_connect_timeout=1)
            client.ping()
            client.close()
        except (redis.RedisError, OSError) as exc:
            raise Unavailable(f"the broker does not answer: {exc}") from exc
