"""Small REST helpers over httpx: uploads, submissions, polling."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

TERMINAL = ("succeeded", "failed", "cancelled")


def upload(client: httpx.Client, route: str, path: Path) -> dict[str, Any]:
    """POST a file as multipart ``file``, streamed from disk."""
    with path.open("rb") as f:
        response = client.post(route, files={"file": (path.name, f)})
    if response.status_code != 201:
        raise RuntimeError(f"{route}: {response.status_code} {response.text[:500]}")
    return response.json()


def submit(client: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/convert", json=spec)
    if response.status_code != 202:
        raise RuntimeError(f"/convert: {response.status_code} {response.text[:500]}")
    return response.json()


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/jobs/{job_id}")
    response.raise_for_status()
    return response.json()


def wait_until(
    client: httpx.Client,
    job_id: str,
    done: tuple[str, ...] = TERMINAL,
    interval: float = 0.1,
    timeout: float = 600,
    until: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[dict[str, Any], float]:
    """Poll until the job's status is in ``done`` (or ``until(job)`` holds); returns the
    job and the perf_counter time of the poll that saw it."""
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(client, job_id)
        seen = time.perf_counter()
        if job["status"] in done or (until is not None and until(job)):
            return job, seen
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {job['status']} after {timeout}s")
        time.sleep(interval)


def require_success(job: dict[str, Any]) -> dict[str, Any]:
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} {job['status']}: {job.get('error')}")
    return job


def end_event(client: httpx.Client, job_id: str, clock: Callable[[], float] = time.time) -> float:
    """Follow GET /jobs/{id}/events until its `end` event; ``clock()`` when it arrived."""
    with client.stream("GET", f"/jobs/{job_id}/events", timeout=600) as response:
        response.raise_for_status()
        event = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif not line and event == "end":
                return clock()
    raise RuntimeError(f"job {job_id}: the stream closed without `end`")
