"""A stored job as the server uses it (``JobRecord``), and the public ``Job`` made from it.

The record holds what the row holds: the model_dir and warm_start_from as stored
(relative to the tenant's folder, or absolute in rows older than tenancy), so the API and
the worker find the job's files without reading the store again. The public body
(k2e.schemas.Job) is made by ``JobRecord.public`` only: no server path leaves through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping

from k2e.cluster_schemas import Cluster
from k2e.db import aware
from k2e.plan_schemas import Provenance
from k2e.queue_schemas import QueuePlace
from k2e.schemas import ExportCheck, Job, JobError, JobMetrics, JobStatus, Progress


@dataclass(frozen=True)
class JobRecord:
    id: str
    tenant: str | None  # rows older than tenancy have none
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    spec: dict[str, Any]
    progress: Progress
    metrics: JobMetrics
    error: JobError | None
    attempts: int
    queue: str
    model_dir: str  # as stored
    warm_start_from: str | None  # as stored
    timeout_s: int | None
    export: ExportCheck | None
    export_path: str | None  # the published export, relative to the tenant's folder
    request_hash: str | None  # the body an Idempotency-Key was first used with
    priority: int | None = None  # its class's value (None: normal, rows older than it)
    dispatched: bool = False  # handed to the broker (dispatched_at set)
    # How often the job yielded its worker to another job; the yield its worker is asked
    # for now ("suspend" or "preempt", k2e.jobs.yielding), or None.
    preemptions: int = 0
    yield_request: str | None = None
    provenance: Provenance | None = None
    # The submission's X-Request-ID and trace context (k2e.logs, k2e.tracing).
    request_id: str | None = None
    trace_context: str | None = None

    @classmethod
    def from_row(cls, row: RowMapping) -> JobRecord:
        export = row["export_check"]
        error = row["error"]
        return cls(
            id=row["id"],
            tenant=row["tenant"],
            status=JobStatus(row["status"]),
            created_at=aware(row["created_at"]),  # type: ignore[arg-type]
            started_at=aware(row["started_at"]),
            finished_at=aware(row["finished_at"]),
            spec=row["spec"],
            progress=Progress.model_validate(row["progress"]),
            metrics=JobMetrics.model_validate(row["metrics"]),
            error=None if error is None else JobError.model_validate(error),
            attempts=row["attempts"],
            queue=row["queue"],
            model_dir=row["model_dir"],
            warm_start_from=row["warm_start_from"],
            timeout_s=row["timeout_s"],
            export=None if export is None else ExportCheck.model_validate(export),
            export_path=row["export_path"],
            request_hash=row["request_hash"],
            priority=row["priority"],
            preemptions=row["preemptions"] or 0,
            dispatched=row["dispatched_at"] is not None,
            yield_request=row["yield_request"],
            provenance=_provenance(row.get("provenance")),
            request_id=row.get("request_id"),
            trace_context=row.get("trace_context"),
        )

    def public(self, place: QueuePlace | None = None, cluster: Cluster | None = None) -> Job:
        """The job as the API answers it: paths relative to the tenant's folder; with
        ``place``, where it stands in its queue (k2e.jobs.placement); with ``cluster``, a
        cluster job's members (k2e.jobs.cluster_views)."""
        return Job(
            id=self.id,
            status=self.status,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            spec=self.spec,
            progress=self.progress,
            metrics=self.metrics,
            error=self.error,
            attempts=self.attempts,
            queue=self.queue,
            model_dir=shown_path(self.model_dir),
            warm_start_from=shown_path(self.warm_start_from),
            tenant=self.tenant,
            timeout_s=self.timeout_s,
            export=self.export,
            scheduling=place if self.status is JobStatus.queued else None,
            preemptions=self.preemptions,
            cluster=cluster,
            provenance=self.provenance,
        )


def _provenance(stored: Any) -> Provenance | None:
    return None if stored is None else Provenance.model_validate(stored)


def shown_path(stored: str | None) -> str | None:
    """A model_dir as a client sees it: relative to its tenant's folder, never absolute
    (rows older than tenancy stored absolute paths: their last two parts are shown)."""
    if stored is None or not stored.startswith("/"):
        return stored
    return "/".join(stored.rstrip("/").split("/")[-2:])
