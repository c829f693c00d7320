"""The metrics read at scrape time: the job store's figures (k2e.jobs.store_figures: jobs,
queues and slots as GET /queues counts them, tenants, workers, the tallies), and whether
the store, the broker and the file store answer. Every label is bounded: queues (k2e's
`cpu` and `gpu`, and whatever queues workers are configured with), job statuses and error
reasons (fixed sets), upload kinds, and at most K2E_METRICS_TENANT_LABELS tenants plus
"other"."""

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from k2e.jobs.store_figures import StoreFigures, read_figures
from k2e.jobs.tallies import (
    BUCKETS,
    ENDED,
    PREEMPTED,
    STARTED,
    SUBMITTED,
    UPLOADED,
    Tally,
    fold,
)
from service.backend import Backend

log = logging.getLogger("k2e.metrics")
CHECK_S = 2.0
_CHECKS = ThreadPoolExecutor(max_workers=3, thread_name_prefix="k2e-metrics-check")


def store_exposition(backend: Backend) -> bytes:
    """The scrape-time metrics in the text format (blocking: run it in a thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(store_metrics(backend))))
    return generate_latest(registry)


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def store_metrics(backend: Backend) -> Iterator[Metric]:
    settings = backend.settings
    up = GaugeMetricFamily(
        "k2e_dependency_up",
        "1 when the dependency answered this scrape, else 0: the job store, the broker "
        "(Redis), the file store (the storage folder or the bucket).",
        labels=["dependency"],
    )
    checks: tuple[tuple[str, Callable[[], None]], ...] = (
        ("store", backend.store.ping),
        ("broker", backend.sender.ping),
        ("storage", backend.storage.blobs.ping),
    )
    # At once, and at most CHECK_S: a bucket that hangs must not hold the scrape up past
    # Prometheus's scrape timeout (it would lose every metric, not just this one).
    running = [(name, _CHECKS.submit(check)) for name, check in checks]
    deadline = time.monotonic() + CHECK_S
    for name, future in running:
        up.add_metric([name], 1.0 if _answered(name, future, deadline) else 0.0)
    yield up
    yield from _disk(backend)
    try:
        fold(backend.store.engine)  # the ledger's rows into its totals, now and then
        figures = read_figures(
            backend.store.engine,
            settings.quota_max_active_jobs,
            settings.worker_live_s,
            settings.metrics_tenant_labels,
        )
    except Exception:
        # The store did not answer: k2e_dependency_up says so, the rest is left out.
        log.warning("metrics: could not read the job store", exc_info=True)
        return
    yield from _job_metrics(figures)
    yield from _queue_metrics(figures)
    yield from _tally_metrics(figures.tallies)


def _answered(name: str, future: Future[None], deadline: float) -> bool:
    try:
        future.result(timeout=max(0.0, deadline - time.monotonic()))
    except Exception as exc:  # any driver error or the timeout is "down", never a failed scrape
        log.warning("metrics: %s does not answer: %r", name, exc)
        return False
    return True


def _disk(backend: Backend) -> Iterator[Metric]:
    try:
        usage = shutil.disk_usage(backend.storage.base)
    except OSError:
        return
    yield GaugeMetricFamily(
        "k2e_storage_free_bytes",
        "Free bytes of the file system of the API's storage folder (its scratch space with "
        "bucket storage).",
        value=usage.free,
    )
    yield GaugeMetricFamily(
        "k2e_storage_size_bytes", "Size of that file system in bytes.", value=usage.total
    )


def _job_metrics(figures: StoreFigures) -> Iterator[Metric]:
    jobs = GaugeMetricFamily(
        "k2e_jobs", "Jobs in the store, by queue and status.", labels=["queue", "status"]
    )
    for (queue, status), n in sorted(figures.jobs.items()):
        jobs.add_metric([queue, status], n)
    yield jobs
    speed = GaugeMetricFamily(
        "k2e_training_steps_per_second",
        "Training steps per second, summed over the queue's running jobs (each job's "
        "progress.steps_per_sec, as its worker last reported it).",
        labels=["queue"],
    )
    for queue, value in sorted(figures.steps_per_sec.items()):
        speed.add_metric([queue], value)
    yield speed
    active = GaugeMetricFamily(
        "k2e_tenant_active_jobs",
        "The tenant's queued, running and cancelling jobs (the busiest "
        'K2E_METRICS_TENANT_LABELS tenants; the rest summed as tenant="other").',
        labels=["tenant"],
    )
    limit = GaugeMetricFamily(
        "k2e_tenant_max_active_jobs",
        "The tenant's max_active_jobs quota (for the tenants k2e_tenant_active_jobs names).",
        labels=["tenant"],
    )
    for load in figures.tenants:
        active.add_metric([load.tenant], load.active)
        if load.limit is not None:
            limit.add_metric([load.tenant], load.limit)
    yield active
    yield limit
    workers = GaugeMetricFamily(
        "k2e_workers",
        "Workers in the registry: live (seen within three heartbeats) or lost.",
        labels=["state"],
    )
    for state, n in sorted(figures.workers.items()):
        workers.add_metric([state], n)
    yield workers


def _queue_metrics(figures: StoreFigures) -> Iterator[Metric]:
    about = {
        "waiting_jobs": "Jobs waiting to be handed to a worker (GET /queues `waiting`).",
        "slots": "Job slots of the live workers that consume the queue.",
        "slots_busy": "Slots taken: jobs handed over and not ended (GET /queues `running`).",
        "slots_borrowed": "Slots held beyond their tenants' shares.",
    }
    families = {
        name: GaugeMetricFamily(f"k2e_queue_{name}", text, labels=["queue"])
        for name, text in about.items()
    }
    oldest = GaugeMetricFamily(
        "k2e_queue_oldest_waiting_seconds",
        "How long the queue's oldest queued job has waited (since it was submitted, or "
        "preempted); 0 with none.",
        labels=["queue"],
    )
    for queue in figures.queues:
        values = (queue.waiting, queue.slots, queue.running, queue.borrowed)
        for family, value in zip(families.values(), values, strict=True):
            family.add_metric([queue.name], value)
        oldest.add_metric([queue.name], figures.oldest_wait_s.get(queue.name, 0.0))
    yield from families.values()
    yield oldest


def _tally_metrics(tallies: list[Tally]) -> Iterator[Metric]:
    submitted = CounterMetricFamily(
        "k2e_jobs_submitted", "Jobs submitted, by queue.", labels=["queue"]
    )
    ended = CounterMetricFamily(
        "k2e_jobs_ended",
        'Jobs that ended, by queue, status and error reason ("" for none).',
        labels=["queue", "status", "reason"],
    )
    preempted = CounterMetricFamily(
        "k2e_job_preemptions", "Running jobs preempted for another job.", labels=["queue"]
    )
    mismatches = CounterMetricFamily(
        "k2e_export_verification_failures",
        "Exports that failed their verification (jobs ended failed, export_mismatch).",
        labels=["queue"],
    )
    watchdog = CounterMetricFamily(
        "k2e_memory_watchdog_interventions",
        "Jobs the workers' memory watchdog stopped (ended failed, out_of_memory).",
        labels=["queue"],
    )
    uploads = CounterMetricFamily("k2e_uploads", "Uploads kept, by kind.", labels=["kind"])
    upload_bytes = CounterMetricFamily(
        "k2e_upload_bytes", "Bytes of the uploads kept, by kind.", labels=["kind"]
    )
    wait = HistogramMetricFamily(
        "k2e_job_queue_wait_seconds",
        "Time from a job's submission to its first start, by queue.",
        labels=["queue"],
    )
    run = HistogramMetricFamily(
        "k2e_job_run_seconds",
        "Time from a job's first start to its end, by queue and status.",
        labels=["queue", "status"],
    )
    reasons: dict[tuple[str, str], int] = {}
    for t in tallies:
        if t.event == SUBMITTED:
            submitted.add_metric([t.queue], t.count)
        elif t.event == PREEMPTED:
            preempted.add_metric([t.queue], t.count)
        elif t.event == UPLOADED:
            uploads.add_metric([t.queue], t.count)
            upload_bytes.add_metric([t.queue], t.total)
        elif t.event == STARTED:
            wait.add_metric([t.queue], _buckets(t), t.total)
        elif t.event in ENDED:
            ended.add_metric([t.queue, t.event, t.reason], t.count)
            if t.event == "failed":
                reasons[t.queue, t.reason] = reasons.get((t.queue, t.reason), 0) + t.count
    for (queue, status), group in _by_queue_and_status(tallies).items():
        run.add_metric([queue, status], _buckets(group), group.total)
    for queue in sorted({q for q, _ in reasons}):
        mismatches.add_metric([queue], reasons.get((queue, "export_mismatch"), 0))
        watchdog.add_metric([queue], reasons.get((queue, "out_of_memory"), 0))
    yield from (submitted, ended, preempted, mismatches, watchdog, uploads, upload_bytes)
    yield from (wait, run)


def _by_queue_and_status(tallies: list[Tally]) -> dict[tuple[str, str], Tally]:
    """The ended tallies merged over reasons (the run-time histogram has no reason)."""
    merged: dict[tuple[str, str], Tally] = {}
    for t in tallies:
        if t.event not in ENDED:
            continue
        key = (t.queue, t.event)
        old = merged.get(key)
        if old is None:
            merged[key] = t
            continue
        merged[key] = Tally(
            t.event,
            t.queue,
            "",
            old.count + t.count,
            old.observed + t.observed,
            old.total + t.total,
            tuple(a + b for a, b in zip(old.buckets, t.buckets, strict=True)),
        )
    return merged


def _buckets(t: Tally) -> list[tuple[str, float]]:
    """Cumulative buckets as prometheus-client takes them (``+Inf`` = the values seen)."""
    return [*((repr(b), float(n)) for b, n in zip(BUCKETS, t.buckets, strict=True))] + [
        ("+Inf", float(t.observed))
    ]
