"""The Celery configuration both sides share. The API only sends tasks by name."""

from celery import Celery
from kombu import Queue

from k2e.settings import Settings
from k2e.tasks import CPU_QUEUE, GPU_QUEUE


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
    options: dict = {"task_id": job_id, "queue": queue}
    if timeout_s is not None:
        options["soft_time_limit"] = timeout_s + grace_s
        options["time_limit"] = timeout_s + 2 * grace_s
    return options
