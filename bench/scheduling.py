"""Priorities and preemption (k2e.jobs.preemption, k2e.jobs.yielding), issue 24's figures:

1. preemption latency: a ``low`` job holds the only worker slot; a ``high`` job is
   submitted; from its POST /convert to its first training step (the worker log's first
   ``loss = ..., step = ...`` line of that job: millisecond stamps, while the job's
   progress is written at most every K2E_PROGRESS_MIN_INTERVAL_S), split into: the low
   job noticing the request (its heartbeat), its checkpoint save, its release, the high
   job's pick-up and its start (model, input pipeline, Estimator) up to the first step.
   One low job is preempted ``--rounds`` times (K2E_PREEMPT_COOLDOWN_S=0 on this stack).
2. steps redone: for each preemption, the step the low job yielded at against the step
   its next attempt restored (``Restoring parameters from .../model.ckpt-N``).
3. a burst of ``--burst`` short jobs with mixed priorities against the same burst all
   ``normal`` (first come), on a stack with the default cool-down: makespan (first
   created_at to last finished_at, server timestamps) of each; throughput ratio =
   first-come makespan / mixed makespan.

    python -m bench.scheduling [--rounds 20] [--burst 50] [--burst-steps 1000] [--burst-rounds 2]

One Celery worker with one slot (`make run`'s worker command). Writes
bench/out/scheduling.json (every raw number); bench/SCHEDULING.md is written from it.
"""

import argparse
import json
import os
import random
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench import client as rest
from bench import scheduling_log as wlog
from bench.e2e import Assets, prepare_assets
from bench.harness import ADMIN_KEY, ROOT, Stack
from bench.machine import machine_info
from bench.stats import percentiles
from bench.workload import convert_spec

OUT = ROOT / "bench" / "out"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
LOW_STEPS = 1_000_000  # never reached: cancelled at the end
HIGH_STEPS = 20


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def _spec(assets: Assets, steps: int, priority: str) -> dict[str, Any]:
    spec = convert_spec(assets.model_id, assets.dataset_id, steps, evaluate=False, export=False)
    spec["priority"] = priority
    return spec


def _training_past(http: httpx.Client, job_id: str, step: int, timeout: float = 300) -> None:
    """Wait until the job runs and its progress reports a step beyond ``step``."""
    rest.wait_until(
        http,
        job_id,
        (),
        0.2,
        timeout,
        lambda j: j["status"] == "running" and j["progress"]["global_step"] > step,
    )


# Each figure of a preemption: from one mark to another (bench/scheduling_log.py's names).
SPANS = {
    "latency_s": ("posted_at", "high_first_step_at"),  # the figure
    "notice_s": ("posted_at", "asked_at"),  # until the low job's heartbeat sees the request
    "save_s": ("save_start_at", "save_end_at"),  # its checkpoint at the yielded step
    "stop_s": ("asked_at", "yielded_at"),  # asked -> released (save, session close, store)
    "pickup_s": ("yielded_at", "high_attempt_at"),  # released -> the high job's attempt
    "start_s": ("high_attempt_at", "high_first_step_at"),  # model, data, Estimator, step 1
}


def preemptions(
    stack: Stack, http: httpx.Client, assets: Assets, rounds: int, heartbeat_s: float
) -> dict[str, Any]:
    """``heartbeat_s``: the stack's K2E_HEARTBEAT_S. Each high job is posted a random time
    (uniform in one heartbeat interval, fixed seed) after the low job trains again, so
    that the wait for the low job's next heartbeat is sampled over its whole range."""
    jitter = random.Random(24)
    low = rest.submit(http, _spec(assets, LOW_STEPS, "low"))["id"]
    samples: list[dict[str, Any]] = []
    yielded = 0
    try:
        for i in range(rounds):
            _training_past(http, low, yielded)
            time.sleep(jitter.uniform(0, heartbeat_s))
            posted = time.time()
            high = rest.submit(http, _spec(assets, HIGH_STEPS, "high"))["id"]
            accepted = time.time()
            job, _ = rest.wait_until(http, high, interval=0.2, timeout=300)
            rest.require_success(job)
            low_job = rest.get_job(http, low)
            samples.append(
                {
                    "round": i,
                    "low": low,
                    "high": high,
                    "posted": posted,
                    "accepted": accepted,
                    "high_created_at": job["created_at"],
                    "high_started_at": job["started_at"],
                    "low_preemptions": low_job["preemptions"],
                }
            )
            print(f"  preemption {i}: low preempted {low_job['preemptions']}x", flush=True)
            yielded = max(yielded, low_job["progress"]["global_step"])
        _training_past(http, low, yielded)  # the last preemption's restore is in the log
    finally:
        http.post(f"/jobs/{low}/cancel")
    return analyse(low, samples, stack.logs / "worker.log")


def analyse(low: str, samples: list[dict[str, Any]], worker_log: Path) -> dict[str, Any]:
    """Each preemption's marks from the worker's log, and their summary."""
    lines = wlog.read_lines(worker_log)
    for attempt, sample in enumerate(samples):
        marks = wlog.preemption(lines, low, sample["high"], attempt)
        marks["posted_at"] = datetime.fromtimestamp(sample["posted"])
        sample["marks"] = {k: str(v) for k, v in marks.items()}
        for key, (a, b) in SPANS.items():
            sample[key] = wlog.span(marks, a, b)
        y, r = marks.get("yielded_step"), marks.get("restored_step")
        sample["yielded_step"], sample["restored_step"] = y, r
        sample["redone_steps"] = y - r if isinstance(y, int) and isinstance(r, int) else None
    return {"low": low, "samples": samples, "summary": _summary(samples)}


def _summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in SPANS:
        values = [s[key] for s in samples if s.get(key) is not None]
        out[key] = {**percentiles(values), "n": len(values)}
    target = [
        s["latency_s"] - (s["save_s"] + 2.0)
        for s in samples
        if s.get("latency_s") is not None and s.get("save_s") is not None
    ]
    out["latency_minus_target_s"] = {**percentiles(target), "n": len(target)}
    redone = [s["redone_steps"] for s in samples if s.get("redone_steps") is not None]
    out["redone_steps"] = {"values": redone, "max": max(redone) if redone else None}
    return out


def burst(
    http: httpx.Client, assets: Assets, n: int, steps: int, mixed: bool, stagger_s: float
) -> dict[str, Any]:
    """Submit ``n`` jobs (back to back, or one every ``stagger_s``) and wait for all;
    priorities drawn with a fixed seed."""
    draw = random.Random(24)
    priorities = [draw.choice(("low", "normal", "high")) if mixed else "normal" for _ in range(n)]
    ids = []
    for p in priorities:
        ids.append(rest.submit(http, _spec(assets, steps, p))["id"])
        time.sleep(stagger_s)
    deadline = time.monotonic() + 60 * n
    done: dict[str, dict[str, Any]] = {}
    while len(done) < n:
        listing = {i: rest.get_job(http, i) for i in ids if i not in done}
        done.update({i: j for i, j in listing.items() if j["status"] in rest.TERMINAL})
        if time.monotonic() > deadline:
            raise RuntimeError(f"burst: {n - len(done)} jobs unfinished")
        time.sleep(0.5)
    jobs = [done[i] for i in ids]
    failed = [j["id"] for j in jobs if j["status"] != "succeeded"]
    created = min(datetime.fromisoformat(j["created_at"]) for j in jobs)
    finished = max(datetime.fromisoformat(j["finished_at"]) for j in jobs)
    by_class: dict[str, list[float]] = {}
    for j, p in zip(jobs, priorities, strict=True):
        turnaround = datetime.fromisoformat(j["finished_at"]) - datetime.fromisoformat(
            j["created_at"]
        )
        by_class.setdefault(p, []).append(turnaround.total_seconds())
    return {
        "mixed": mixed,
        "priorities": {p: priorities.count(p) for p in set(priorities)},
        "makespan_s": (finished - created).total_seconds(),
        "failed": failed,
        "preemptions": sum(j.get("preemptions") or 0 for j in jobs),
        "turnaround_s": {p: percentiles(v) for p, v in by_class.items()},
    }


def _stack(name: str, env: dict[str, str]) -> Stack:
    scratch = OUT / "scheduling-scratch" / name
    return Stack(scratch, OUT / "logs-scheduling" / name, env=env)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--burst-steps", type=int, default=1000)
    parser.add_argument("--burst-rounds", type=int, default=2, help="first-come, mixed pairs")
    parser.add_argument(
        "--only",
        action="append",
        choices=["preemption", "preemption-hb1", "burst", "burst-staggered", "burst-k1"],
    )
    parser.add_argument(
        "--stagger-s", type=float, default=0.5, help="burst-staggered: seconds between POSTs"
    )
    parser.add_argument(
        "--reparse", action="store_true", help="re-read the kept worker logs, run nothing"
    )
    args = parser.parse_args()
    parts = args.only or ["preemption", "preemption-hb1", "burst", "burst-staggered"]
    path = OUT / "scheduling.json"
    if args.reparse:
        kept = json.loads(path.read_text())
        for part, record in kept["parts"].items():
            if "samples" in record:
                log = OUT / "logs-scheduling" / part / "worker.log"
                record.update(analyse(record["low"], record["samples"], log))
        path.write_text(json.dumps(kept, indent=1, default=str))
        return
    shutil.rmtree(OUT / "scheduling-scratch", ignore_errors=True)
    results: dict[str, Any] = {"machine": machine_info(), "parts": {}, "runs": []}
    if args.only and path.exists():  # the other parts' figures stay
        results = json.loads(path.read_text())
        results.setdefault("runs", [{"args": results.pop("args", None)}])
    results["runs"].append({"args": vars(args), "started": time.strftime("%H:%M:%S UTC")})
    try:
        for part in parts:
            record: dict[str, Any] = {"loadavg_start": loadavg()}
            results["parts"][part] = record
            print(f"{part} (loadavg {record['loadavg_start']})", flush=True)
            started = time.perf_counter()
            shutil.rmtree(OUT / "logs-scheduling" / part, ignore_errors=True)
            # preemption: default settings but the cool-down (0: one low job is preempted
            # again and again); preemption-hb1: the same with a 1 s heartbeat (attribution:
            # the worker learns of the request at its heartbeat).
            bursts = part.startswith("burst")
            env = {} if bursts else {"K2E_PREEMPT_COOLDOWN_S": "0"}
            if part == "burst-k1":  # staggered, one job in flight: running jobs can be preempted
                env["K2E_TENANT_INFLIGHT_JOBS"] = "1"
            heartbeat_s = 1.0 if part == "preemption-hb1" else 5.0
            if part == "preemption-hb1":
                env["K2E_HEARTBEAT_S"] = "1"
            record["env"] = env
            stack = _stack(part, env).start()
            try:
                with httpx.Client(base_url=stack.url, headers=AUTH, timeout=120) as http:
                    assets = prepare_assets(http, stack.scratch / "assets")
                    record["ready_s"] = time.perf_counter() - started
                    if not bursts:
                        record.update(preemptions(stack, http, assets, args.rounds, heartbeat_s))
                    else:
                        rest.wait_until(  # a warm worker: one job first
                            http, rest.submit(http, _spec(assets, 1, "normal"))["id"]
                        )
                        runs = record.setdefault("runs", [])
                        for i in range(args.burst_rounds):
                            order = (False, True) if i % 2 == 0 else (True, False)
                            for mixed in order:
                                record.setdefault("loadavg_runs", []).append(loadavg())
                                stagger = 0.0 if part == "burst" else args.stagger_s
                                run = burst(
                                    http, assets, args.burst, args.burst_steps, mixed, stagger
                                )
                                runs.append(run)
                                print(f"  burst mixed={mixed}: {run['makespan_s']:.1f} s")
                        first = [r["makespan_s"] for r in runs if not r["mixed"]]
                        mixed_s = [r["makespan_s"] for r in runs if r["mixed"]]
                        record["throughput_ratio"] = sum(first) / sum(mixed_s)
            finally:
                stack.stop()
            record["part_s"] = time.perf_counter() - started
            path.write_text(json.dumps(results, indent=1, default=str))
    finally:
        path.write_text(json.dumps(results, indent=1, default=str))
        shutil.rmtree(OUT / "scheduling-scratch", ignore_errors=True)
    print(
        json.dumps(
            {p: r.get("summary", r.get("throughput_ratio")) for p, r in results["parts"].items()},
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
