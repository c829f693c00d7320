"""The Celery app workers run: ``celery -A worker.celery_app worker -Q cpu``."""

import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from k2e.jobs.queueing import make_celery
from k2e.settings import get_settings
from worker import observability

if TYPE_CHECKING:
    from worker.training import JobRunner

settings = get_settings()
app = make_celery(settings, name="k2e-worker")
app.conf.include = ["worker.tasks"]
observability.install(settings)
# A pool process still past the job memory bound after its task (a job that ended
# out_of_memory; Python rarely gives memory back) is replaced before its next job.
app.conf.worker_max_memory_per_child = settings.job_memory_bytes // 1024  # KiB

log = logging.getLogger("k2e.worker")
_reconciler: Any = None
_registry: Any = None
_courier: Any = None


@lru_cache(maxsize=1)
def runner() -> "JobRunner":
    """This process's JobRunner; the first call imports TensorFlow."""
    from worker.training import JobRunner

    return JobRunner(settings)


@worker_process_init.connect
def _load_tensorflow(**_: Any) -> None:
    """Import TensorFlow once per worker process, before the first job arrives."""
    runner()
    log.info("worker process ready: TensorFlow loaded")


@worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    """The main process (no TensorFlow) requeues the jobs of dead workers."""
    global _reconciler
    from worker.reconciler import Reconciler

    _reconciler = Reconciler(settings, app)
    _reconciler.start()
    log.info(
        "reconciler running every %.0f s (lease %.0f s)",
        settings.reconcile_interval_s,
        settings.lease_s,
    )


@worker_ready.connect
def _join_registry(sender: Any = None, **_: Any) -> None:
    """The main process registers the worker's queues and job slots (its pool's
    concurrency) for the scheduler, and keeps them fresh."""
    global _registry
    from worker.registry import RegistryHeartbeat

    queues = sorted(app.amqp.queues.consume_from)
    slots = int(getattr(getattr(sender, "controller", None), "concurrency", None) or 1)
    _registry = RegistryHeartbeat(settings, app, queues, slots)
    _registry.start()


@worker_ready.connect
def _start_webhook_courier(**_: Any) -> None:
    """The main process sends webhook deliveries from threads of its own: a slow
    endpoint never holds a pool process (a job slot)."""
    global _courier
    from k2e.db import make_engine
    from k2e.webhooks.courier import Courier

    _courier = Courier.from_settings(make_engine(settings.sqlalchemy_url), settings)
    _courier.start()


@worker_shutdown.connect
def _stop_reconciler(**_: Any) -> None:
    for loop in (_reconciler, _registry, _courier):
        if loop is not None:
            loop.stop()
