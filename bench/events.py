"""Measurement 7, the job event stream (GET /jobs/{id}/events):

(a) the end event's latency: for each of ``jobs`` short jobs (200 steps, no eval, no
    export), a client subscribes right after POST /convert and notes when the `end` event
    arrives (time.time()); the latency is that minus the job's `finished_at` (the worker's
    final store write; same machine, same clock). Target: p99 ≤ 100 ms.
(b) training steps/s with 50 subscribers streaming the job's events versus none: the
    workload job (2000 steps), alternating none / 50 in ``rounds`` rounds, each job's
    median `global_step/sec` (GET /jobs/{id}/metrics); the figure is median(with) /
    median(none). The 50 subscribers are asyncio streams in one thread of the bench
    process, on the same 2 cores. Target: ≥ 0.97.

    python -m bench.events [--jobs 20] [--rounds 3] [--subscribers 50]   # its own stack
"""

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import threading
import time
from datetime import datetime
from typing import Any

import httpx

from bench import client as rest
from bench import e2e
from bench.harness import ROOT, Stack, read_cpu_seconds
from bench.stats import percentiles
from bench.workload import convert_spec

OUT = ROOT / "bench" / "out"


def end_latency(http: httpx.Client, model_id: str, dataset_id: str, jobs: int) -> dict[str, Any]:
    spec = convert_spec(model_id, dataset_id, steps=200, evaluate=False, export=False)
    latencies_ms = []
    for _ in range(jobs):
        job_id = rest.submit(http, spec)["id"]
        received = rest.end_event(http, job_id)
        job = rest.require_success(rest.get_job(http, job_id))
        finished = datetime.fromisoformat(job["finished_at"]).timestamp()
        latencies_ms.append((received - finished) * 1000)
        time.sleep(0.3)
    return {"jobs": jobs, "latency_ms": percentiles(latencies_ms), "samples_ms": latencies_ms}


class Subscribers:
    """``count`` streams of one job's events, in an asyncio loop on a thread of its own."""

    def __init__(self, base_url: str, headers: dict[str, str], job_id: str, count: int) -> None:
        self.events = [0] * count
        self.ended = 0
        self.cpu_s = 0.0  # the subscribers' own CPU (their thread), for attribution
        self._args = (base_url, headers, job_id, count)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()

    async def _main(self) -> None:
        base_url, headers, job_id, count = self._args
        started = time.thread_time()
        try:
            await self._streams(base_url, headers, job_id, count)
        finally:
            self.cpu_s = time.thread_time() - started

    async def _streams(
        self, base_url: str, headers: dict[str, str], job_id: str, count: int
    ) -> None:
        limits = httpx.Limits(max_connections=count + 5)
        async with httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=600, limits=limits
        ) as http:
            await asyncio.gather(*(self._one(http, job_id, i) for i in range(count)))

    async def _one(self, http: httpx.AsyncClient, job_id: str, index: int) -> None:
        async with http.stream("GET", f"/jobs/{job_id}/events") as response:
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    self.events[index] += 1
                if line == "event: end":
                    self.ended += 1

    def join(self) -> None:
        self._thread.join(120)


def _steps_per_sec(http: httpx.Client, job_id: str) -> float:
    runs = http.get(f"/jobs/{job_id}/metrics").json()["runs"]
    return statistics.median(p["value"] for p in runs["train"]["global_step/sec"])


def throughput(
    http: httpx.Client,
    model_id: str,
    dataset_id: str,
    rounds: int,
    subscribers: int,
    api_pid: int | None = None,
) -> dict[str, Any]:
    spec = convert_spec(model_id, dataset_id, evaluate=False, export=False)
    runs: dict[str, list[float]] = {"none": [], "subscribed": []}
    # Where the CPU went while each job ran: the API process's, and the subscribers' own
    # (they share the machine's cores with the worker).
    cpu: dict[str, list[dict[str, float]]] = {"none": [], "subscribed": []}
    delivered = []
    for r in range(rounds):
        order = ("none", "subscribed") if r % 2 == 0 else ("subscribed", "none")
        for case in order:
            api_cpu = read_cpu_seconds(api_pid) if api_pid else 0.0
            job_id = rest.submit(http, spec)["id"]
            watchers = None
            if case == "subscribed":
                headers = dict(http.headers)
                watchers = Subscribers(str(http.base_url), headers, job_id, subscribers)
            job = rest.require_success(rest.wait_until(http, job_id, interval=0.5)[0])
            used = {
                "job_s": e2e._seconds_between(job["started_at"], job["finished_at"]),
                "api_cpu_s": (read_cpu_seconds(api_pid) - api_cpu) if api_pid else 0.0,
                "subscribers_cpu_s": 0.0,
            }
            if watchers is not None:
                watchers.join()
                if watchers.ended != subscribers:
                    raise RuntimeError(f"{watchers.ended}/{subscribers} subscribers saw `end`")
                delivered.append(min(watchers.events))
                used["subscribers_cpu_s"] = watchers.cpu_s
            cpu[case].append(used)
            runs[case].append(_steps_per_sec(http, job_id))
            time.sleep(0.5)
    median = {case: statistics.median(values) for case, values in runs.items()}
    return {
        "rounds": rounds,
        "subscribers": subscribers,
        "steps_per_sec": runs,
        "median": median,
        "ratio": median["subscribed"] / median["none"],
        "events_per_subscriber_min": delivered,
        "cpu": cpu,
        "cpu_median": {
            case: {k: statistics.median(u[k] for u in used) for k in used[0]}
            for case, used in cpu.items()
        },
    }


def measure(
    http: httpx.Client,
    model_id: str,
    dataset_id: str,
    jobs: int = 20,
    rounds: int = 3,
    subscribers: int = 50,
    api_pid: int | None = None,
) -> dict[str, Any]:
    return {
        "end": end_latency(http, model_id, dataset_id, jobs),
        "throughput": throughput(http, model_id, dataset_id, rounds, subscribers, api_pid),
    }


def main(argv: list[str] | None = None) -> int:
    from bench import targets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subscribers", type=int, default=50)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    stack = Stack(OUT / "events-scratch", OUT / "events-logs")
    shutil.rmtree(stack.scratch, ignore_errors=True)
    try:
        stack.start()
        with httpx.Client(base_url=stack.url, headers=stack.admin_headers(), timeout=60) as http:
            assets = e2e.prepare_assets(http, stack.scratch / "assets")
            results = {
                "events": measure(
                    http,
                    assets.model_id,
                    assets.dataset_id,
                    args.jobs,
                    args.rounds,
                    args.subscribers,
                    api_pid=stack.api.pid if stack.api else None,
                )
            }
    finally:
        stack.stop()
        stack.remove_scratch()
    (OUT / "events.json").write_text(json.dumps(results, indent=1) + "\n")
    for row in targets.rows(results):
        print(f"  {row.verdict:4s}  {row.number}  {row.figure}: {row.value} (target {row.target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
