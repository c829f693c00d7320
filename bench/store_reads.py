"""GET /jobs/{id} throughput on each job store, against /healthz, in one run.

For each store (SQLite, and the PostgreSQL at DATABASE_URL or 127.0.0.1:5432/test) it
starts one API process (the launcher's command) on a fresh data folder, records a
finished and a running job straight into that API's store, and loads the paths from a separate
process (bench.api_load, 16 connections). ``--code DIR`` runs the API of another
checkout (e.g. a worktree of an earlier commit) for a side-by-side comparison; the job
row is written by reflecting whatever table that version created.

    python -m bench.store_reads [--code DIR] [--header "Authorization: Bearer KEY"]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import MetaData, create_engine, insert

from bench import api_load
from k2e.launcher.embedded_redis import free_port
from k2e.launcher.stack import api_command

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("K2E_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/test")


def _insert_job(url: str, status: str) -> str:
    """One job in ``status``, written with the columns this version's table has."""
    engine = create_engine(url)
    table = MetaData()
    table.reflect(engine, only=["k2e_jobs"])
    jobs = table.tables["k2e_jobs"]
    job_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": job_id,
        "status": status,
        "queue": "cpu",
        "created_at": now,
        "started_at": now,
        "finished_at": now,
        "updated_at": now,
        "spec": {"keras_model_path": "0" * 32, "train": {"dataset": "1" * 32, "max_steps": 2000}},
        "progress": {"global_step": 2000, "max_steps": 2000, "steps_per_sec": 700.0, "eta_s": 0},
        "metrics": {
            "train": [{"step": s, "loss": 1.0 / s} for s in range(100, 2001, 100)],
            "eval": {"acc_1": 0.8, "acc_2": 0.9, "loss": 0.5, "global_step": 2000.0},
        },
        "attempts": 1,
        "model_dir": f"jobs/{job_id}",
    }
    if "tenant" in jobs.c:
        values["tenant"] = "default"
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(**values))
    engine.dispose()
    return job_id


def measure(
    store: str,
    code: Path,
    headers: tuple[str, ...],
    seconds: float,
    cache: bool = True,
    access_log: bool = False,
    admin_key: str | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="k2e-store-reads-") as scratch:
        data = Path(scratch)
        url = POSTGRES if store == "postgres" else f"sqlite:///{data / 'k2e.db'}"
        port = free_port()
        env = dict(
            os.environ,
            K2E_DATA_DIR=str(data),
            DATABASE_URL=url,
            REDIS_URL="redis://127.0.0.1:1/0",  # reads never reach the broker
            PYTHONPATH=str(code),
        )
        if admin_key is not None:
            env["K2E_ADMIN_KEY"] = admin_key
        if not cache:  # every read a query: the worst case, many distinct jobs
            env.update(K2E_JOB_CACHE_S="0", K2E_LIVE_JOB_CACHE_S="0")
        argv = api_command("127.0.0.1", port)
        if access_log:  # uvicorn's default, before k2e turned it off
            argv = [a for a in argv if a != "--no-access-log"]
        with (data / "api.log").open("wb") as log:
            api = subprocess.Popen(argv, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if api.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((data / "api.log").read_text()[-2000:])
                    time.sleep(0.1)
                ended, running = _insert_job(url, "succeeded"), _insert_job(url, "running")
                result = api_load.load(
                    port,
                    ["/healthz", f"/jobs/{ended}", f"/jobs/{running}"],
                    api.pid,
                    connections=16,
                    seconds=seconds,
                    rounds=3,
                    headers=headers,
                )
            finally:
                api.terminate()
                api.wait(30)
    paths = result["paths"]
    health, job, live = paths["/healthz"], paths[f"/jobs/{ended}"], paths[f"/jobs/{running}"]
    if job["errors"] or live["errors"]:
        raise RuntimeError(f"GET /jobs/{{id}} answered {job['errors'] + live['errors']} errors")
    return {
        "store": store,
        "cache": cache,
        "access_log": access_log,
        "server_cores": {p: round(x["server_cores"], 2) for p, x in paths.items()},
        "healthz_rps": round(health["rps"]),
        "job_rps": round(job["rps"]),
        "ratio": round(job["rps"] / health["rps"], 3),
        "job_p50_ms": round(job["latency_ms"]["p50"], 2),
        "job_p99_ms": round(job["latency_ms"]["p99"], 2),
        "running_job_rps": round(live["rps"]),
        "running_job_p99_ms": round(live["latency_ms"]["p99"], 2),
    }


def postgres_available() -> bool:
    try:
        create_engine(POSTGRES).connect().close()
    except Exception:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose API runs")
    parser.add_argument("--store", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no-cache", action="store_true", help="K2E_*JOB_CACHE_S=0")
    parser.add_argument("--access-log", action="store_true", help="uvicorn's access log on")
    args = parser.parse_args()
    rows = [
        measure(
            store,
            args.code.resolve(),
            tuple(args.header),
            args.seconds,
            not args.no_cache,
            args.access_log,
        )
        for store in args.store or ["sqlite", "postgres"]
    ]
    print(json.dumps({"code": str(args.code), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
