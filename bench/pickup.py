"""Measurement 3 (and the pickup half of 6): submit -> running with an idle, warm worker.

Jobs are tiny (1 step, no eval, no export) and submitted one at a time; the next is
submitted only after the previous one finished and the worker had a moment to go idle.
Two figures per job: the server's ``started_at - created_at`` (both written by k2e: the
record before the task is sent, the lease when the worker takes the job), and what the
client sees: from the 202 of POST /convert to the first GET /jobs/{id} (polled every
10 ms) that is no longer ``queued``.
"""

import time
from datetime import datetime
from typing import Any

import httpx

from bench import client as rest
from bench.stats import percentiles
from bench.workload import convert_spec

POLL_S = 0.01
IDLE_S = 0.3


def measure(http: httpx.Client, model_id: str, dataset_id: str, jobs: int) -> dict[str, Any]:
    spec = convert_spec(model_id, dataset_id, steps=1, evaluate=False, export=False)
    server_ms, client_ms, post_ms, job_s = [], [], [], []
    for _ in range(jobs):
        time.sleep(IDLE_S)
        started = time.perf_counter()
        job = rest.submit(http, spec)
        accepted = time.perf_counter()
        _, seen = rest.wait_until(http, job["id"], ("running", *rest.TERMINAL), POLL_S)
        job, _ = rest.wait_until(http, job["id"], rest.TERMINAL, 0.05)
        rest.require_success(job)
        created = datetime.fromisoformat(job["created_at"])
        server_ms.append(
            (datetime.fromisoformat(job["started_at"]) - created).total_seconds() * 1e3
        )
        client_ms.append((seen - accepted) * 1e3)
        post_ms.append((accepted - started) * 1e3)
        job_s.append((datetime.fromisoformat(job["finished_at"]) - created).total_seconds())
    return {
        "jobs": jobs,
        "server_ms": percentiles(server_ms),
        "client_ms": percentiles(client_ms),
        "post_convert_ms": percentiles(post_ms),
        "job_seconds": percentiles(job_s),
        "raw": {"server_ms": server_ms, "client_ms": client_ms, "post_convert_ms": post_ms},
    }
