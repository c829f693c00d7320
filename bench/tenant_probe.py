"""Does GET /jobs/{id} tell a member that another tenant's job exists? It must answer an
unknown id and another tenant's id alike: the same 404, and the same time.

Starts one API process (the launcher's command) on a fresh data folder, records a
finished job of tenant "owner" straight into its store, and then, per round: the owner
reads its job (so that the API's job cache holds it, as it does while its owner polls),
and a member of tenant "prober" asks for that job's id and for an unknown id, in
alternating order, over one keep-alive connection. Prints both medians (and quartiles).

    python -m bench.tenant_probe [--samples 300] [--code DIR]

``--code DIR`` runs the API of another checkout (e.g. a worktree of an earlier commit).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.launcher.embedded_redis import EmbeddedRedis, free_port
from k2e.launcher.stack import api_command
from k2e.schemas import JobStatus
from k2e.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "k2e_bench-admin-key-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _member(http: httpx.Client, tenant: str) -> dict[str, str]:
    assert http.post("/tenants", json={"name": tenant}, headers=ADMIN).status_code == 201
    key = http.post(f"/tenants/{tenant}/keys", json={"name": tenant}, headers=ADMIN).json()["key"]
    return {"Authorization": f"Bearer {key}"}


def _timed(http: httpx.Client, path: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    response = http.get(path, headers=headers)
    elapsed = time.perf_counter() - started
    assert response.status_code == 404, response.text
    return elapsed * 1000


def _summary(name: str, samples: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(samples, n=4)
    return f"{name:24} median {median:.3f} ms  (quartiles {q1:.3f} / {q3:.3f}, n={len(samples)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--code", type=Path, default=ROOT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        redis = EmbeddedRedis(Path(scratch) / "redis", appendonly=False).start()
        env.update(
            K2E_DATA_DIR=str(data),
            K2E_ADMIN_KEY=ADMIN_KEY,
            PYTHONPATH=str(args.code),
            REDIS_URL=redis.url,
        )
        api = subprocess.Popen(
            api_command("127.0.0.1", port),
            cwd=args.code,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(Path(scratch) / "api.log").open("wb"),
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if http.get("/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline or api.poll() is not None:
                        sys.exit(
                            "the API did not start:\n" + (Path(scratch) / "api.log").read_text()
                        )
                    time.sleep(0.1)
                owner, prober = _member(http, "owner"), _member(http, "prober")
                store = JobLeases(Settings(data_dir=data).sqlalchemy_url)
                job_id = str(uuid.uuid4())
                store.create(NewJob(job_id, "owner", {}, "cpu", f"jobs/{job_id}", 1))
                store.finish(job_id, JobStatus.succeeded)
                other: list[float] = []
                unknown: list[float] = []
                for round_ in range(args.samples + 20):
                    assert http.get(f"/jobs/{job_id}", headers=owner).status_code == 200
                    missing = f"/jobs/{uuid.uuid4()}"
                    pair = [(other, f"/jobs/{job_id}"), (unknown, missing)]
                    for samples, path in pair if round_ % 2 else reversed(pair):
                        elapsed = _timed(http, path, prober)
                        if round_ >= 20:  # the first rounds warm the process up
                            samples.append(elapsed)
            print(_summary("another tenant's id", other))
            print(_summary("an unknown id", unknown))
        finally:
            api.terminate()
            api.wait(30)
            redis.stop()


if __name__ == "__main__":
    main()
