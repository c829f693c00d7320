"""Submit -> running while another tenant has a burst of jobs queued (k2e.jobs.dispatch).

The rule's promise: a tenant has at most ``tenant_inflight_jobs`` (K) jobs in the broker
or running at once, so a newly submitted job of another tenant waits for at most K of
the burst's jobs, however many the burst holds. Tenant ``burst`` (its own key and
uploads) submits ``burst`` tiny jobs through POST /convert; then the admin's tenant
submits tiny jobs one at a time while the backlog is still there. For each, from the
job store: ``started_at - created_at``, and how many of the burst's jobs started in
between (the figure held against K). Afterwards the burst's waiting jobs are cancelled.
"""

import statistics
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import and_, func, select, update

from bench import client as rest
from bench.e2e import Assets
from bench.harness import Stack
from bench.stats import percentiles
from bench.workload import convert_spec
from k2e.db import utcnow
from k2e.tables import jobs

TENANT = "burst"


def _burst_client(http: httpx.Client, jobs_n: int) -> httpx.Client:
    quotas = {"max_active_jobs": jobs_n + 10}
    created = http.post("/tenants", json={"name": TENANT, "quotas": quotas})
    if created.status_code != 201:
        raise RuntimeError(f"/tenants: {created.status_code} {created.text[:300]}")
    key = http.post(f"/tenants/{TENANT}/keys", json={"name": "bench burst"})
    if key.status_code != 201:
        raise RuntimeError(f"/tenants/{TENANT}/keys: {key.status_code} {key.text[:300]}")
    auth = {"Authorization": f"Bearer {key.json()['key']}"}
    return httpx.Client(base_url=str(http.base_url), timeout=60, headers=auth)


def measure(
    stack: Stack, http: httpx.Client, assets: Assets, burst: int, samples: int, limit: int
) -> dict[str, Any]:
    """``limit``: the API's tenant_inflight_jobs (K)."""
    with _burst_client(http, burst) as other:
        model = rest.upload(other, "/models", assets.h5)["id"]
        dataset = rest.upload(other, "/datasets", assets.npz)["id"]
        tiny = convert_spec(model, dataset, steps=1, evaluate=False, export=False)
        for _ in range(burst):
            rest.submit(other, tiny)
    engine = stack.store().engine
    mine = convert_spec(assets.model_id, assets.dataset_id, steps=1, evaluate=False, export=False)
    waits_ms, ahead, backlog = [], [], []
    try:
        for _ in range(samples):
            job = rest.submit(http, mine)
            job, _ = rest.wait_until(http, job["id"], rest.TERMINAL, 0.05)
            rest.require_success(job)
            created = datetime.fromisoformat(job["created_at"])
            started = datetime.fromisoformat(job["started_at"])
            waits_ms.append((started - created).total_seconds() * 1e3)
            with engine.connect() as conn:
                ahead.append(_started_between(conn, created, started))
                backlog.append(_waiting(conn))
        with engine.connect() as conn:
            durations = _burst_durations(conn)
    finally:
        _cancel_burst(engine, http)
    return {
        "burst_jobs": burst,
        "inflight_limit": limit,
        "samples": samples,
        "wait_ms": percentiles(waits_ms),
        "burst_started_ahead": ahead,
        "max_started_ahead": max(ahead),
        "burst_waiting_at_each": backlog,
        "burst_job_s_p50": statistics.median(durations) if durations else None,
        "raw_wait_ms": waits_ms,
    }


def _cancel_burst(engine: Any, http: httpx.Client) -> None:
    """The rest of the burst would keep the worker busy: the jobs still in the store alone
    end cancelled at once; the few handed to the broker are cancelled through the API."""
    with engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(
                jobs.c.tenant == TENANT,
                jobs.c.status == "queued",
                jobs.c.dispatched_at.is_(None),
            )
            .values(status="cancelled", finished_at=utcnow(), updated_at=utcnow())
        )
        query = select(jobs.c.id).where(
            jobs.c.tenant == TENANT, jobs.c.status.in_(["queued", "running"])
        )
        handed_over = [row[0] for row in conn.execute(query).all()]
    for job_id in handed_over:
        http.post(f"/jobs/{job_id}/cancel")
    engine.dispose()


def _started_between(conn: Any, created: datetime, started: datetime) -> int:
    query = select(func.count()).where(
        and_(jobs.c.tenant == TENANT, jobs.c.started_at > created, jobs.c.started_at < started)
    )
    return int(conn.execute(query).scalar_one())


def _waiting(conn: Any) -> int:
    query = select(func.count()).where(jobs.c.tenant == TENANT, jobs.c.status == "queued")
    return int(conn.execute(query).scalar_one())


def _burst_durations(conn: Any) -> list[float]:
    query = select(jobs.c.started_at, jobs.c.finished_at).where(
        jobs.c.tenant == TENANT, jobs.c.status == "succeeded"
    )
    return [(f - s).total_seconds() for s, f in conn.execute(query).all() if s and f]
