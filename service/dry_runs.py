"""POST /convert?dry_run=true's work: the checks of a submission (k2e.jobs.dry_run), and
nothing kept. A one-shot multipart body's files are kept as uploads while the plan is
made (the checks read them where a job would) and deleted before the answer."""

from typing import Any

from k2e.catalog import Kind
from k2e.jobs.dry_run import dry_run
from k2e.plan_schemas import Plan
from service.backend import Backend
from service.multipart import ReceivedFile
from service.submission import (
    check_job_quota,
    drop_uploads,
    inject_uploads,
    keep_uploads,
    parse_spec,
)


def plan_submission(
    raw: Any, files: dict[str, ReceivedFile], backend: Backend, tenant: str
) -> Plan:
    """The plan of the job ``raw`` (the parsed JSON spec) and ``files`` would make; raises
    what POST /convert would answer (the job quota's 429 included)."""
    if not isinstance(raw, dict):
        parse_spec(raw)
    check_job_quota(backend, tenant)
    created: dict[Kind, list[str]] = {"model": [], "dataset": []}
    try:
        ids = keep_uploads(files, backend, tenant, created)
        spec = parse_spec(inject_uploads(raw, ids))
        return dry_run(
            spec,
            backend.store,
            backend.storage.for_tenant(tenant),
            backend.settings,
            tenant,
            backend.tenants.quotas(tenant),
            backend.placement,
        )
    finally:
        drop_uploads(created, backend, tenant)
