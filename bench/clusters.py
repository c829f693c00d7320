"""Cluster jobs (issue 25): gang formation, a 2-worker cluster's speed, recovery after a
member is killed. Three Celery workers on this machine (one slot each), PostgreSQL, the
seed's multi-input example (tests/support/fault_deployment.py's deployment, with its short
lease: K2E_LEASE_S=3, K2E_HEARTBEAT_S=0.5, K2E_RECONCILE_INTERVAL_S=1).

1. formation: POST /convert of a 3-member cluster (2 workers + 1 ps) on idle workers →
   every member row ``running`` (its TensorFlow process started), and → the chief's first
   reported step; against a single-node job's POST /convert → first reported step.
2. speed: global steps/s of the 2-worker cluster against one worker, measured on the
   job's progress events between 20 % and 90 % of max_steps; the CPU seconds each member
   process used (the CPU split).
3. recovery: a worker member's Celery pool process is killed (SIGKILL) mid-training → the
   chief sees it silent (K2E_LEASE_S) → gang 2 placed → every member running → the first
   step reported past the step it resumed from.

    K2E_TEST_DATABASE_URL=... python -m bench.clusters [--steps 6000] [--rounds 3]

Writes bench/out/clusters.json; bench/CLUSTERS.md is written by hand from it.
"""

import argparse
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from tests.support.api_keys import TEST_ADMIN_KEY

os.environ.setdefault("K2E_ADMIN_KEY", TEST_ADMIN_KEY)

from k2e.db import make_engine  # noqa: E402
from k2e.jobs.gangs import GangStore  # noqa: E402
from k2e.jobs.job_store import JobStore  # noqa: E402
from tests.support.fault_deployment import FAST_RECOVERY, Env  # noqa: E402
from tests.support.postgres import fresh_postgres_database  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
CLUSTER = {"workers": 2, "parameter_servers": 1}
MEMBER_PROCESS = "worker.member_process"


def members() -> dict[int, str]:
    """pid → role of every member TensorFlow process alive."""
    found = {}
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if MEMBER_PROCESS in line:
            found[process.pid] = json.loads(line.split(MEMBER_PROCESS, 1)[1])["role"]
    return found


class Watch:
    def __init__(self, env: Env) -> None:
        self.env = env
        engine = make_engine(env.settings.sqlalchemy_url)
        self.gangs = GangStore(engine)
        self.store = JobStore(env.settings.sqlalchemy_url)
        self.cpu: dict[int, tuple[str, float]] = {}

    def sample_cpu(self) -> None:
        for pid, role in members().items():
            try:
                times = psutil.Process(pid).cpu_times()
                self.cpu[pid] = (role, times.user + times.system)
            except psutil.NoSuchProcess:
                pass

    def until(self, check: Any, timeout: float = 300) -> float:
        deadline = time.monotonic() + timeout
        while not check():
            self.sample_cpu()
            if time.monotonic() > deadline:
                raise TimeoutError("bench: condition not met")
            time.sleep(0.05)
        return time.monotonic()

    def all_running(self, job_id: str, gang: int) -> bool:
        rows = self.gangs.members(job_id)
        return bool(rows) and all(m.gang == gang and m.state == "running" for m in rows)

    def step(self, job_id: str) -> int:
        return int(self.env.job(job_id)["progress"]["global_step"] or 0)

    def done(self, job_id: str) -> dict:
        self.until(lambda: self.env.job(job_id)["status"] in ("succeeded", "failed"), 900)
        return self.env.job(job_id)

    def rate(self, job_id: str, steps: int) -> float:
        """Global steps/s between 20 % and 90 % of max_steps, from the progress events."""
        points = [
            (e["at"], e["data"]["global_step"])
            for e in self.store.stream_events(job_id, 0, 100000)
            if e["kind"] == "progress" and e.get("data") and e["data"].get("global_step")
        ]
        window = [(at, s) for at, s in points if 0.2 * steps <= s <= 0.9 * steps]
        (t0, s0), (t1, s1) = window[0], window[-1]
        return (s1 - s0) / (t1 - t0).total_seconds()


def formation(env: Env, watch: Watch, steps: int) -> dict[str, float]:
    start = time.monotonic()
    job = env.submit(steps, distribution=CLUSTER)
    running = watch.until(lambda: watch.all_running(job["id"], 1))
    first = watch.until(lambda: watch.step(job["id"]) > 0)
    assert watch.done(job["id"])["status"] == "succeeded"
    start_single = time.monotonic()
    single = env.submit(steps)
    first_single = watch.until(lambda: watch.step(single["id"]) > 0)
    assert watch.done(single["id"])["status"] == "succeeded"
    return {
        "cluster_members_running_s": running - start,
        "cluster_first_step_s": first - start,
        "single_first_step_s": first_single - start_single,
    }


def speed(env: Env, watch: Watch, steps: int) -> dict[str, Any]:
    watch.cpu = {}
    job = env.submit(steps, distribution=CLUSTER)
    watch.done(job["id"])
    cpu: dict[str, float] = {}
    for role, seconds in watch.cpu.values():
        cpu[role] = cpu.get(role, 0.0) + seconds
    single = env.submit(steps)
    watch.done(single["id"])
    return {
        "cluster_steps_per_s": watch.rate(job["id"], steps),
        "single_steps_per_s": watch.rate(single["id"], steps),
        "cluster_cpu_s": cpu,
    }


def recovery(env: Env, watch: Watch, steps: int) -> dict[str, float]:
    job = env.submit(steps, distribution=CLUSTER)
    watch.until(lambda: watch.step(job["id"]) >= steps // 4)
    worker_pid = next(pid for pid, role in members().items() if role == "worker")
    pool = psutil.Process(worker_pid).parent()
    assert pool is not None
    killed = time.monotonic()
    os.kill(pool.pid, signal.SIGKILL)
    down = watch.until(lambda: watch.gangs.gang_of(job["id"]) == 2)
    running = watch.until(lambda: watch.all_running(job["id"], 2))
    resumed_from = watch.step(job["id"])
    first = watch.until(lambda: watch.step(job["id"]) > resumed_from)
    done = watch.done(job["id"])
    assert done["status"] == "succeeded", done
    return {
        "kill_to_gang_2_placed_s": down - killed,
        "kill_to_members_running_s": running - killed,
        "kill_to_first_step_s": first - killed,
        "final_step": done["progress"]["global_step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path("/tmp") / f"k2e-bench-clusters-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    results: dict[str, Any] = {"loadavg_start": Path("/proc/loadavg").read_text().strip()}
    with fresh_postgres_database() as url:
        env = Env(root, database_url=url, **FAST_RECOVERY)
        try:
            for n in range(3):
                env.worker("cpu", node_name=f"bench{n}@%h")
            watch = Watch(env)
            for name, run in (("formation", formation), ("speed", speed), ("recovery", recovery)):
                results[name] = [run(env, watch, args.steps) for _ in range(args.rounds)]
                print(name, json.dumps(results[name], indent=1), flush=True)
        finally:
            env.close()
            shutil.rmtree(root, ignore_errors=True)
    results["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    OUT.mkdir(exist_ok=True)
    (OUT / "clusters.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
