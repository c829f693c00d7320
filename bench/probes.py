"""Attribution probes: small measurements, taken in the same run, that say where the
time of a missed target goes (k2e's own code, the web framework, or TensorFlow)."""

import sqlite3
import statistics
import time
from typing import Any

from bench import api_load
from bench.harness import AUTH_HEADER, Stack, stop_process
from k2e.launcher.embedded_redis import free_port
from k2e.tenancy.bodies import DEFAULT_TENANT
from k2e.vetting.sandbox import SandboxLimits, inspect_model_file, policy_for


def sandbox_seconds(stack: Stack, model_id: str, runs: int = 5) -> dict[str, float]:
    """One inspection of the uploaded HDF5 in k2e's sandbox child process, as POST /models
    runs it (and, before they reused the stored inspection, POST /convert and the worker)."""
    settings = stack.settings
    path = stack.storage().for_tenant(DEFAULT_TENANT).model_file(model_id)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        inspect_model_file(path, "h5", policy_for(settings), SandboxLimits.from_settings(settings))
        times.append(time.perf_counter() - started)
    return {"median_s": statistics.median(times), "min_s": min(times)}


def store_get_us(stack: Stack, job_id: str, calls: int = 300, rounds: int = 3) -> dict[str, float]:
    """One job read: ``JobStore.get`` (SQLAlchemy Core, then a ``Job``) against the bare
    row from the sqlite3 module."""
    store = stack.store()
    raw = sqlite3.connect(stack.data_dir / "k2e.db")
    reads = {
        "jobstore_get_us": store.get,
        "sqlite3_row_us": lambda job_id: raw.execute(
            "SELECT * FROM k2e_jobs WHERE id = ?", (job_id,)
        ).fetchone(),
    }
    samples: dict[str, list[float]] = {name: [] for name in reads}
    for _ in range(rounds):
        for name, read in reads.items():
            read(job_id)
            started = time.perf_counter()
            for _ in range(calls):
                read(job_id)
            samples[name].append((time.perf_counter() - started) / calls * 1e6)
    raw.close()
    store.engine.dispose()
    return {name: statistics.median(values) for name, values in samples.items()}


PROBE_PATHS = (
    "/healthz",
    "/probe/healthz",
    "/jobs/{id}",
    "/probe/jobs-sync/{id}",
    "/probe/jobs-async-deps/{id}",
    "/probe/jobs-async/{id}",
    "/probe/jobs-cached/{id}",
)


def api_variants(stack: Stack, job_id: str, connections: int) -> dict[str, Any]:
    """The same load as measurement 4, against bench.probe_app's variant routes, served
    by a second uvicorn process on the same store (the main API idles meanwhile)."""
    port = free_port()
    process = stack.spawn_api("bench.probe_app:create", port, "probe-api.log")
    try:
        stack.wait_for_http(f"http://127.0.0.1:{port}", process, "probe-api.log")
        paths = [p.replace("{id}", job_id) for p in PROBE_PATHS]
        answer = api_load.load(
            port, paths, process.pid, connections, seconds=2.0, rounds=3, headers=(AUTH_HEADER,)
        )
    finally:
        stop_process(process)
    return {
        template: answer["paths"][path] for template, path in zip(PROBE_PATHS, paths, strict=True)
    }
