"""GET /metrics: its scrape time with 10 000 jobs in the store, and what counting requests
costs GET /jobs/{id} (req/s with the metrics on, this code, against off, the code before
them, extracted from git). Run it alone on the machine (under the benchmark lock):

    .venv/bin/python -m bench.metrics [--store sqlite] [--store postgres] [--rounds 6]
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert

from bench import store_reads
from k2e.db import create_schema
from k2e.jobs.tallies import STARTED, SUBMITTED
from k2e.launcher.embedded_redis import EmbeddedRedis, free_port
from k2e.launcher.stack import api_command
from k2e.tables import jobs, tallies

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-metrics-token-0123456789"
ADMIN_KEY = "k2e_bench-metrics-admin-key-0123456789"
# The commit before GET /metrics: the "off" side of the throughput ratio.
BEFORE_METRICS = "381380b"
STATUSES = ("succeeded",) * 6 + ("failed", "cancelled", "queued", "running")
REASONS = ("error", "timed_out", "out_of_memory", "export_mismatch")


def fill_store(url: str, count: int, tenants: int = 50) -> None:
    """``count`` jobs of ``tenants`` tenants in both queues, and their tallies, written
    straight into the store (as many rows as k2e would have written)."""
    engine = create_engine(url)
    create_schema(engine)
    rng = random.Random(0)
    now = datetime.now(UTC)
    job_rows, tally_rows = [], []
    for i in range(count):
        status = STATUSES[i % len(STATUSES)]
        queue = ("cpu", "gpu")[i % 2]
        created = now - timedelta(seconds=rng.uniform(60, 86400))
        started = created + timedelta(seconds=rng.uniform(1, 600))
        ended = started + timedelta(seconds=rng.uniform(10, 3600))
        error = {"type": "E", "message": "m", "reason": rng.choice(REASONS)}
        job_id = uuid.uuid4().hex
        job_rows.append(
            {
                "id": job_id,
                "status": status,
                "queue": queue,
                "tenant": f"tenant-{i % tenants:02d}",
                "created_at": created,
                "updated_at": ended,
                "started_at": None if status == "queued" else started,
                "finished_at": ended if status in ("succeeded", "failed", "cancelled") else None,
                "dispatched_at": None if status == "queued" else started,
                "spec": {"train": {"max_steps": 1000}},
                "progress": {"global_step": 500, "max_steps": 1000, "steps_per_sec": 300.0},
                "metrics": {"train": [], "eval": {}},
                "error": error if status == "failed" else None,
                "attempts": 1,
                "model_dir": f"jobs/{job_id}",
            }
        )
        tally_rows.append(_tally(now, SUBMITTED, queue))
        if status != "queued":
            tally_rows.append(_tally(now, STARTED, queue, (started - created).total_seconds()))
        if status in ("succeeded", "failed", "cancelled"):
            reason = error["reason"] if status == "failed" else ""
            run_s = (ended - started).total_seconds()
            tally_rows.append(_tally(now, status, queue, run_s, reason))
    with engine.begin() as conn:
        conn.execute(insert(jobs), job_rows)
        conn.execute(insert(tallies), tally_rows)
    engine.dispose()


def _tally(at: datetime, event: str, queue: str, value: float | None = None, reason: str = ""):
    return {"at": at, "event": event, "queue": queue, "reason": reason, "value": value}


def scrape_times(store: str, count: int, scrapes: int) -> dict[str, Any]:
    """Milliseconds per GET /metrics (sequential, one client) with ``count`` jobs."""
    with tempfile.TemporaryDirectory(prefix="k2e-bench-metrics-") as scratch:
        data = Path(scratch)
        url = store_reads.POSTGRES if store == "postgres" else f"sqlite:///{data / 'k2e.db'}"
        if store == "postgres":
            _empty_postgres(url)
        fill_store(url, count)
        redis = EmbeddedRedis(data / "redis", appendonly=False, die_with_parent=True)
        redis.start()
        port = free_port()
        env = dict(
            os.environ,
            K2E_DATA_DIR=str(data),
            DATABASE_URL=url,
            REDIS_URL=redis.url,
            K2E_METRICS_TOKEN=TOKEN,
            K2E_ADMIN_KEY=ADMIN_KEY,
        )
        log = (data / "api.log").open("wb")
        api = subprocess.Popen(api_command("127.0.0.1", port), cwd=ROOT, env=env, stdout=log)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_up(base, api)
            times, size = [], 0
            with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                for i in range(scrapes + 3):
                    started = time.perf_counter()
                    response = client.get(f"{base}/metrics")
                    elapsed = (time.perf_counter() - started) * 1000
                    assert response.status_code == 200, response.text
                    if i >= 3:  # the first ones warm the connection pools up
                        times.append(elapsed)
                    size = len(response.content)
            series = sum(
                1 for line in response.text.splitlines() if line and not line.startswith("#")
            )
        finally:
            api.terminate()
            api.wait(30)
            log.close()
            redis.stop()
    times.sort()
    return {
        "store": store,
        "jobs": count,
        "scrapes": len(times),
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
        "max_ms": round(times[-1], 1),
        "bytes": size,
        "series": series,
    }


def _empty_postgres(url: str) -> None:
    from sqlalchemy import text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def _wait_up(base: str, api: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if api.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.1)


def throughput(off_code: Path, rounds: int, seconds: float) -> dict[str, Any]:
    """GET /jobs/{id} req/s of this code (metrics on) and the code before (off),
    alternating on, off, off, on, ... (bench.store_reads's measurement: SQLite, 16
    connections, a finished job)."""
    header = (f"Authorization: Bearer {ADMIN_KEY}",)
    on, off = [], []
    for i in range(rounds):
        order = [("on", ROOT), ("off", off_code)]
        for side, code in order if i % 2 == 0 else order[::-1]:
            row = store_reads.measure("sqlite", code, header, seconds, admin_key=ADMIN_KEY)
            (on if side == "on" else off).append(row)
    on_rps = statistics.median(r["job_rps"] for r in on)
    off_rps = statistics.median(r["job_rps"] for r in off)
    return {
        "on_job_rps": [r["job_rps"] for r in on],
        "off_job_rps": [r["job_rps"] for r in off],
        "on_p99_ms": [r["job_p99_ms"] for r in on],
        "off_p99_ms": [r["job_p99_ms"] for r in off],
        "ratio": round(on_rps / off_rps, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--off-commit", default=BEFORE_METRICS)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "scrape": [scrape_times(s, args.jobs, args.scrapes) for s in args.store or ["sqlite"]]
    }
    with tempfile.TemporaryDirectory(prefix="k2e-bench-off-") as off:
        archive = subprocess.run(
            ["git", "archive", args.off_commit], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", off], input=archive.stdout, check=True)
        result["get_job"] = throughput(Path(off), args.rounds, args.seconds)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
