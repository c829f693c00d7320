"""Measurement 6: queue pickup and API latency with 100, then 1000 jobs in the store.

Filler jobs are written straight into the API's job store with k2e.jobs.job_store.JobStore
(create, start, record_progress, finish): finished jobs that look like the e2e job
(its spec, a loss curve, eval metrics). At each level the bench measures pickup (as in
measurement 3) and the latency of GET /jobs/{id} and GET /jobs?limit=50 with one
connection (service time, not throughput). Flat means p50 at 1000 / p50 at 100 <= 1.5.
"""

import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from bench import api_load, pickup
from bench.harness import AUTH_HEADER, Stack
from k2e.jobs.job_store import JobStore, NewJob
from k2e.jobs.leases import JobLeases
from k2e.schemas import JobStatus
from k2e.tables import jobs
from k2e.tenancy.bodies import DEFAULT_TENANT

FLAT_RATIO = 1.5


def job_count(store: JobStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one())


def fill(stack: Stack, template: dict[str, Any], total: int) -> int:
    """Add finished filler jobs until the store holds ``total`` jobs; returns how many."""
    store = JobLeases(stack.settings.sqlalchemy_url)  # the worker's side: start, finish
    added = 0
    curve = template["metrics"]["train"]
    for _ in range(max(0, total - job_count(store))):
        job_id = str(uuid.uuid4())
        max_steps = template["progress"]["max_steps"]
        store.create(
            NewJob(job_id, DEFAULT_TENANT, template["spec"], "cpu", f"jobs/{job_id}", max_steps)
        )
        owner = f"bench-filler:{job_id[:8]}"
        store.start(job_id, owner, lease_s=60)
        store.record_progress(job_id, owner, template["progress"], curve)
        store.finish(
            job_id,
            JobStatus.succeeded,
            owner,
            eval_metrics=template["metrics"]["eval"],
            progress=template["progress"],
        )
        added += 1
    store.engine.dispose()
    return added


def measure_level(
    stack: Stack, http: httpx.Client, model_id: str, dataset_id: str, job_id: str, jobs_n: int
) -> dict[str, Any]:
    assert stack.api is not None
    count = job_count(stack.store())
    latency = api_load.load(
        stack.port,
        [f"/jobs/{job_id}", "/jobs?limit=50"],
        stack.api.pid,
        connections=1,
        seconds=2.0,
        rounds=2,
        max_requests=2000,
        warmup=0.5,
        headers=(AUTH_HEADER,),
    )
    picked = pickup.measure(http, model_id, dataset_id, jobs_n)
    return {
        "jobs_in_store": count,
        "get_job_ms": latency["paths"][f"/jobs/{job_id}"]["latency_ms"],
        "list_jobs_ms": latency["paths"]["/jobs?limit=50"]["latency_ms"],
        "pickup_server_ms": picked["server_ms"],
        "pickup_client_ms": picked["client_ms"],
    }


def measure(
    stack: Stack,
    http: httpx.Client,
    model_id: str,
    dataset_id: str,
    template: dict[str, Any],
    levels: tuple[int, ...] = (100, 1000),
    pickup_jobs: int = 20,
) -> dict[str, Any]:
    results: dict[str, Any] = {"levels": {}}
    for level in levels:
        added = fill(stack, template, level)
        print(f"  scaling: {added} filler jobs added, measuring at {level}", flush=True)
        results["levels"][str(level)] = measure_level(
            stack, http, model_id, dataset_id, template["id"], pickup_jobs
        )
    low, high = (results["levels"][str(level)] for level in (levels[0], levels[-1]))
    results["ratios"] = {
        key: high[key]["p50"] / low[key]["p50"]
        for key in ("get_job_ms", "list_jobs_ms", "pickup_server_ms", "pickup_client_ms")
    }
    results["flat_ratio"] = FLAT_RATIO
    return results
