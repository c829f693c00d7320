"""Attribution probes: small measurements, taken in the same run, that say where the
time of a missed target goes (k2e's own code, the web framework, or TensorFlow)."""

import statistics
import time
from typing import Any

from bench import api_load
from bench.probe_app import get_prebuilt
from bench.stack import Stack, stop_process
from k2e.embedded_redis import free_port
from k2e.sandbox import SandboxLimits, inspect_model_file, policy_for


def sandbox_seconds(stack: Stack, model_id: str, runs: int = 5) -> dict[str, float]:
    """One inspection of the uploaded HDF5 in k2e's sandbox child process, as both
    POST /convert and the worker (before training) run it."""
    settings = stack.settings
    path = stack.storage().model_file(model_id)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        inspect_model_file(path, "h5", policy_for(settings), SandboxLimits.from_settings(settings))
        times.append(time.perf_counter() - started)
    return {"median_s": statistics.median(times), "min_s": min(times)}


def store_get_us(stack: Stack, job_id: str, calls: int = 300, rounds: int = 3) -> dict[str, float]:
    """JobStore.get (builds its SELECT per call) vs. the same read with a prebuilt SELECT."""
    store = stack.store()
    current: list[float] = []
    prebuilt: list[float] = []
    for _ in range(rounds):
        for samples, read in ((current, store.get), (prebuilt, _prebuilt(store))):
            read(job_id)
            started = time.perf_counter()
            for _ in range(calls):
                read(job_id)
            samples.append((time.perf_counter() - started) / calls * 1e6)
    store.engine.dispose()
    return {
        "jobstore_get_us": statistics.median(current),
        "prebuilt_us": statistics.median(prebuilt),
    }


def _prebuilt(store: Any) -> Any:
    return lambda job_id: get_prebuilt(store, job_id)


PROBE_PATHS = (
    "/healthz",
    "/probe/healthz",
    "/jobs/{id}",
    "/probe/jobs-1hop/{id}",
    "/probe/jobs-0hop/{id}",
    "/probe/jobs-0hop-prebuilt/{id}",
)


def api_variants(stack: Stack, job_id: str, connections: int) -> dict[str, Any]:
    """The same load as measurement 4, against bench.probe_app's variant routes, served
    by a second uvicorn process on the same store (the main API idles meanwhile)."""
    port = free_port()
    process = stack.spawn_api("bench.probe_app:create", port, "probe-api.log")
    try:
        stack.wait_for_http(f"http://127.0.0.1:{port}", process, "probe-api.log")
        paths = [p.replace("{id}", job_id) for p in PROBE_PATHS]
        answer = api_load.load(port, paths, process.pid, connections, seconds=2.0, rounds=3)
    finally:
        stop_process(process)
    return {
        template: answer["paths"][path] for template, path in zip(PROBE_PATHS, paths, strict=True)
    }
