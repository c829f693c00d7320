"""Measurements 1 and 2: end-to-end overhead and training throughput.

(a) bench/direct.py's ``run`` in a warm, long-lived helper process (TensorFlow imported,
    one warm-up run done); (b) the same as a cold ``python bench/direct.py`` subprocess,
    import included; (c) the same workload through k2e: POST /convert, then poll
    GET /jobs/{id} until it succeeded, with a warm worker (one warm-up job done); (d) the
    same as (c), followed through GET /jobs/{id}/events until its `end` event.
Rounds rotate the order (a b c d, b c d a, ...) so drift hits every case alike.
Throughput compares the TensorBoard ``global_step/sec`` series of (c) (served by
GET /jobs/{id}/metrics) with the same series of (a)'s model_dir, read by the same parser.
"""

import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench import client as rest
from bench.harness import ROOT, Stack, read_cpu_seconds, read_thread_cpu_seconds
from bench.workload import RUN_CONFIG, STEPS, convert_spec, seed_multi_io_data, write_npz
from k2e.formats.tfevents import read_scalars

DIRECT = ROOT / "bench" / "direct.py"
WARMUP_STEPS = 200
# The client polls slowly while the job trains and fast once it reports its last step:
# polling every 0.1 s throughout cost the worker's training ~15% of its steps/s on this
# 2-core machine (the API and the client take CPU that TensorFlow's threads want).
POLL_TRAINING_S = 0.5
POLL_S = 0.05
FAST_ETA_S = 0.6  # one slow poll and a bit: the switch comes before training ends


@dataclass
class Assets:
    npz: Path
    h5: Path
    model_id: str
    dataset_id: str


def prepare_assets(http: httpx.Client, workdir: Path) -> Assets:
    """The seed model as HDF5 (built by direct.py, the only TF user) and its data, uploaded."""
    workdir.mkdir(parents=True, exist_ok=True)
    npz = write_npz(workdir / "train.npz", seed_multi_io_data())
    h5 = workdir / "seed.h5"
    subprocess.run([sys.executable, str(DIRECT), "--save-h5", str(h5)], check=True, cwd=ROOT)
    model = rest.upload(http, "/models", h5)
    dataset = rest.upload(http, "/datasets", npz)
    return Assets(npz, h5, model["id"], dataset["id"])


class WarmHelper:
    """``python bench/direct.py --serve``: TensorFlow stays imported between runs."""

    def __init__(self, log: Path) -> None:
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(DIRECT), "--serve"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._answer()  # {"ready": true}

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench/direct.py --serve died; see {self._log.name}")
        return json.loads(line)

    def run(
        self, model_dir: Path, data: Path, steps: int, k2e_hooks: bool = False
    ) -> dict[str, Any]:
        assert self.process.stdin is not None
        request = {"model_dir": str(model_dir), "data": str(data), "steps": steps}
        request["k2e_hooks"] = k2e_hooks
        started = time.perf_counter()
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self._answer()
        answer["wall_s"] = time.perf_counter() - started
        return answer

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def cold_run(model_dir: Path, data: Path, steps: int, log: Path) -> dict[str, Any]:
    started = time.perf_counter()
    with log.open("ab") as err:
        done = subprocess.run(
            [sys.executable, str(DIRECT), "--once", str(model_dir), "--data", str(data)]
            + ["--steps", str(steps)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            check=True,
        )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    answer["wall_s"] = time.perf_counter() - started
    return answer


def k2e_run(http: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    """Submit and poll until succeeded; wall time as the client sees it, and the
    server's own created_at -> finished_at."""
    started = time.perf_counter()
    job = rest.submit(http, spec)
    accepted = time.perf_counter()
    # Progress arrives every log_step_count_steps, but at most every
    # K2E_PROGRESS_MIN_INTERVAL_S: the report at max_steps - 100 may never come. Poll fast
    # from that step, or once the job's own ETA says training ends within FAST_ETA_S.
    last_report = spec["train"]["max_steps"] - RUN_CONFIG["log_step_count_steps"]

    def near_the_end(j: dict[str, Any]) -> bool:
        eta = j["progress"].get("eta_s")
        return j["progress"]["global_step"] >= last_report or (
            eta is not None and eta <= FAST_ETA_S
        )

    rest.wait_until(http, job["id"], interval=POLL_TRAINING_S, until=near_the_end)
    job, seen = rest.wait_until(http, job["id"], interval=POLL_S)
    rest.require_success(job)
    metrics = http.get(f"/jobs/{job['id']}/metrics").json()["runs"]
    return {
        "job_id": job["id"],
        "wall_s": seen - started,
        "post_s": accepted - started,
        "server_s": _seconds_between(job["created_at"], job["finished_at"]),
        "pickup_s": _seconds_between(job["created_at"], job["started_at"]),
        "worker_s": _seconds_between(job["started_at"], job["finished_at"]),
        "steps_per_sec": _median_rate(metrics.get("train", {})),
        "progress_steps_per_sec": job["progress"].get("steps_per_sec"),
    }


def k2e_stream_run(http: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    """Submit and follow the job's event stream until `end`: the wall time a client of
    GET /jobs/{id}/events sees (no polling lag)."""
    started = time.perf_counter()
    job = rest.submit(http, spec)
    ended = rest.end_event(http, job["id"], clock=time.perf_counter)
    rest.require_success(rest.get_job(http, job["id"]))
    return {"job_id": job["id"], "wall_s": ended - started}


# Celery's log lines start with "[2026-11-26 05:14:28,587: INFO/ForkPoolWorker-1]".
_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): ")
ESTIMATOR_CREATED = "Using config:"  # the Estimator's constructor, inside model_to_estimator


def worker_prefix_s(worker_log: Path, job_id: str) -> float | None:
    """From the worker's "job <id>: attempt" line to the Estimator's "Using config" line
    after it: spec checks (the sandbox inspection), HDF5 load and compile."""
    started = None
    for line in worker_log.read_text(errors="replace").splitlines():
        if started is None and f"job {job_id}: attempt" in line:
            started = _log_time(line)
        elif started is not None and ESTIMATOR_CREATED in line:
            created = _log_time(line)
            return None if created is None else (created - started).total_seconds()
    return None


# The worker logs "job <id>: <phase>" as each phase starts (worker/phases.py).
PHASES = ("training", "evaluating", "exporting", "verifying the export")


def worker_phases_s(worker_log: Path, job_id: str) -> dict[str, float]:
    """Seconds from each phase's line to the next phase's (the last: to "succeeded")."""
    marks: list[tuple[str, datetime]] = []
    for line in worker_log.read_text(errors="replace").splitlines():
        stamp = _log_time(line) if job_id in line else None
        if stamp is None:
            continue
        for phase in PHASES:
            if line.rstrip().endswith(f"job {job_id}: {phase}"):
                marks.append((phase, stamp))
        if f"job {job_id} succeeded" in line:
            marks.append(("succeeded", stamp))
    return {
        phase: (after - at).total_seconds()
        for (phase, at), (_, after) in zip(marks, marks[1:], strict=False)
    }


STORED_INSPECTION = "stored inspection kept"  # k2e.spec.checks, when the sha256 matches


def worker_inspected(worker_log: Path, job_id: str) -> bool | None:
    """Whether the worker inspected the job's model in the sandbox (False: it kept the
    inspection stored at upload); None when the job's lines are not in the log."""
    started = False
    for line in worker_log.read_text(errors="replace").splitlines():
        if not started:
            started = f"job {job_id}: attempt" in line
        elif STORED_INSPECTION in line:
            return False
        elif ESTIMATOR_CREATED in line:
            return True
    return None


def _log_time(line: str) -> datetime | None:
    match = _STAMP.match(line)
    return datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f") if match else None


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _median_rate(train_run: dict[str, list[dict[str, float]]]) -> float | None:
    points = train_run.get("global_step/sec", [])
    return statistics.median(p["value"] for p in points) if points else None


def direct_rate(model_dir: Path) -> float | None:
    return _median_rate(read_scalars(model_dir).get("train", {}))


class CpuMeter:
    """CPU seconds a process used during the ``with`` block: in all, and in its busiest
    thread (for both (a) and (c), the thread that runs TensorFlow's training loop)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.total = self.busiest = 0.0

    def __enter__(self) -> "CpuMeter":
        self._before = read_thread_cpu_seconds(self.pid) if self.pid else {}
        return self

    def __exit__(self, *_: object) -> None:
        if not self.pid:
            return
        used = [
            cpu - self._before.get(tid, 0.0)
            for tid, cpu in read_thread_cpu_seconds(self.pid).items()
        ]
        self.total, self.busiest = sum(used), max(used, default=0.0)


def _others_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of the stack's other processes: the API, the Celery main
    process (the pool process runs the job) and Redis."""
    pids = {
        "api": stack.api.pid if stack.api else None,
        "celery_main": stack.worker.pid if stack.worker else None,
        "redis": stack.redis.process.pid if stack.redis.process else None,
    }
    return {name: read_cpu_seconds(pid) for name, pid in pids.items() if pid is not None}


def measure(http: httpx.Client, stack: Stack, assets: Assets, workdir: Path, rounds: int) -> dict:
    """``rounds`` rounds of (a), (b), (c), (d), rotating the order each round."""
    logs = stack.logs
    spec = convert_spec(assets.model_id, assets.dataset_id, STEPS)
    helper = WarmHelper(logs / "direct-warm.log")
    try:
        helper.run(workdir / "warmup-a", assets.npz, WARMUP_STEPS)
        k2e_run(http, convert_spec(assets.model_id, assets.dataset_id, WARMUP_STEPS))
        runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": [], "c": [], "d": []}
        order = ["a", "b", "c", "d"]
        for i in range(rounds):
            for case in order[i % 4 :] + order[: i % 4]:
                model_dir = workdir / f"round{i}-{case}"
                others = _others_cpu(stack)
                if case == "a":
                    with CpuMeter(helper.process.pid) as cpu:
                        result = helper.run(model_dir, assets.npz, STEPS)
                    result["steps_per_sec"] = direct_rate(model_dir)
                elif case == "b":
                    result = cold_run(model_dir, assets.npz, STEPS, logs / "direct-cold.log")
                elif case == "c":
                    with CpuMeter(stack.worker_pool_pid()) as cpu:
                        result = k2e_run(http, spec)
                else:
                    result = k2e_stream_run(http, spec)
                if case in ("a", "c"):
                    result["cpu_s"], result["train_thread_cpu_s"] = cpu.total, cpu.busiest
                    after = _others_cpu(stack)
                    result["others_cpu_s"] = {k: after[k] - others[k] for k in others}
                result["round"] = i
                runs[case].append(result)
                print(f"  e2e round {i} ({case}): {result['wall_s']:.2f} s", flush=True)
        hook_probe = measure_hooks(helper, assets.npz, workdir / "hooks")
    finally:
        helper.close()
    for result in runs["c"]:
        result["prefix_s"] = worker_prefix_s(logs / "worker.log", result["job_id"])
        result["worker_inspected"] = worker_inspected(logs / "worker.log", result["job_id"])
        result["phases_s"] = worker_phases_s(logs / "worker.log", result["job_id"])
    for result in runs["d"]:
        result["phases_s"] = worker_phases_s(logs / "worker.log", result["job_id"])
    return {**summarize(runs), "hook_probe": hook_probe}


def measure_hooks(helper: WarmHelper, data: Path, workdir: Path, pairs: int = 4) -> dict:
    """Training alone, in the warm helper, without and with k2e's ProgressHook
    (alternating): what k2e's hook costs TensorFlow's steps, away from the worker."""
    rates: dict[str, list[float]] = {"plain": [], "k2e_hook": []}
    for i in range(pairs):
        cases = ["plain", "k2e_hook"] if i % 2 == 0 else ["k2e_hook", "plain"]
        for case in cases:
            model_dir = workdir / f"{case}-{i}"
            helper.run(model_dir, data, -STEPS, k2e_hooks=case == "k2e_hook")
            rate = direct_rate(model_dir)
            if rate is not None:
                rates[case].append(rate)
    medians = {case: statistics.median(values) for case, values in rates.items()}
    return {"rates": rates, "median": medians, "ratio": medians["k2e_hook"] / medians["plain"]}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    median = {case: statistics.median(r["wall_s"] for r in rs) for case, rs in runs.items()}
    rate_a = statistics.median(r["steps_per_sec"] for r in runs["a"])
    rate_c = statistics.median(r["steps_per_sec"] for r in runs["c"])
    # (c)'s wall time = POST /convert + pickup + the worker's time + the polling lag.
    for a, c in zip(runs["a"], runs["c"], strict=True):
        c["lag_s"] = c["wall_s"] - c["post_s"] - c["server_s"]
        c["worker_minus_a_s"] = c["worker_s"] - a["wall_s"]
        c["minus_a_s"] = c["wall_s"] - a["wall_s"]
        c["ratio_to_a"] = c["wall_s"] / a["wall_s"]
    prefixes = [r["prefix_s"] for r in runs["c"] if r.get("prefix_s") is not None]
    return {
        "steps": STEPS,
        "runs": runs,
        "median_s": median,
        "ratio_c_a": median["c"] / median["a"],
        "ratio_c_b": median["c"] / median["b"],
        "steps_per_sec": {"a": rate_a, "c": rate_c},
        "throughput_ratio": rate_c / rate_a,
        "c_parts_s": {
            part: statistics.median(r[part] for r in runs["c"])
            for part in ("post_s", "pickup_s", "worker_s", "lag_s", "worker_minus_a_s", "minus_a_s")
        },
        "paired_ratio_c_a": statistics.median(r["ratio_to_a"] for r in runs["c"]),
        "cpu_s": {
            case: {
                key: statistics.median(r[key] for r in runs[case])
                for key in ("cpu_s", "train_thread_cpu_s")
            }
            for case in ("a", "c")
        },
        "others_cpu_s": {
            case: {
                name: statistics.median(r["others_cpu_s"][name] for r in runs[case])
                for name in runs[case][0]["others_cpu_s"]
            }
            for case in ("a", "c")
        },
        "worker_prefix_s": statistics.median(prefixes) if prefixes else None,
        "worker_inspected": any(r.get("worker_inspected") for r in runs["c"]),
        # (d): the same job followed through GET /jobs/{id}/events until `end`.
        "events": {
            "median_s": median["d"],
            "ratio_c_a": median["d"] / median["a"],
            "paired_ratio_d_a": statistics.median(
                d["wall_s"] / a["wall_s"] for a, d in zip(runs["a"], runs["d"], strict=True)
            ),
            "phases_s": {
                phase: statistics.median(r["phases_s"][phase] for r in runs["d"])
                for phase in PHASES
                if all(phase in r.get("phases_s", {}) for r in runs["d"])
            },
        },
        "c_phases_s": {
            phase: statistics.median(r["phases_s"][phase] for r in runs["c"])
            for phase in PHASES
            if all(phase in r.get("phases_s", {}) for r in runs["c"])
        },
        "a_phases_s": {
            phase: statistics.median(r[phase] for r in runs["a"])
            for phase in ("model_s", "build_s", "train_s", "eval_s", "export_s")
        },
    }
