"""`make bench`: start Redis, the API and a worker, run every measurement, write
bench/RESULTS.md and bench/results.json.

    python -m bench.run            # the full run (~15 minutes on 2 cores)
    python -m bench.run --quick    # a smoke run; writes to bench/out/ instead of bench/
    python -m bench.run --only api --only downloads   # some parts; writes to bench/out/
"""

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from bench import (
    api_load,
    downloads,
    e2e,
    events,
    fairness,
    memory,
    pickup,
    probes,
    report,
    scaling,
    store_reads,
    targets,
)
from bench.client import require_success, submit, wait_until
from bench.harness import ADMIN_KEY, AUTH_HEADER, ROOT, Stack, read_rss_bytes
from bench.machine import machine_info
from bench.workload import convert_spec

BENCH = ROOT / "bench"
OUT = BENCH / "out"  # git-ignored: logs, scratch data
PARTS = (
    "e2e",
    "pickup",
    "events",
    "api",
    "stores",
    "memory",
    "downloads",
    "scaling",
    "fairness",
    "probes",
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; results in bench/out")
    parser.add_argument("--rounds", type=int, help="end-to-end rounds (default 7)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch data folder")
    parser.add_argument("--only", action="append", choices=PARTS, help="run this part (repeat)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 7)
    args.pickup_jobs = 5 if quick else 50
    args.scaling_jobs = 3 if quick else 20
    args.scaling_levels = (100, 150) if quick else (100, 1000)
    args.transfer_bytes = (100 if quick else 1024) * 1024 * 1024
    args.connections = 16
    args.event_jobs = 3 if quick else 20
    args.event_rounds = 1 if quick else 3
    args.burst_jobs = 50 if quick else 1000
    args.burst_samples = 3 if quick else 5
    args.parts = tuple(args.only) if args.only else PARTS
    args.results_dir = OUT if quick or args.only else BENCH
    return args


class Progress:
    """Prints each part as it starts and notes the load average then."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results
        self.started = time.perf_counter()
        results["loadavg"] = {}

    def part(self, name: str) -> None:
        load = os.getloadavg()[0]
        self.results["loadavg"][name] = load
        elapsed = time.perf_counter() - self.started
        print(f"[{elapsed:6.0f} s] {name} (load average {load:.2f})", flush=True)


def run(args: argparse.Namespace, stack: Stack, results: dict[str, Any]) -> None:
    progress = Progress(results)
    scratch = stack.scratch
    assert stack.api is not None
    parts = args.parts
    results["api_rss_at_start"] = read_rss_bytes(stack.api.pid)
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=stack.url, timeout=60, headers=auth) as http:
        assets = e2e.prepare_assets(http, scratch / "assets")
        if "e2e" in parts:
            progress.part("e2e")
            results["e2e"] = e2e.measure(http, stack, assets, scratch / "e2e", args.rounds)
            template_id = results["e2e"]["runs"]["c"][-1]["job_id"]
        else:  # a finished job for the parts that read one
            job = submit(http, convert_spec(assets.model_id, assets.dataset_id, e2e.WARMUP_STEPS))
            template_id = require_success(wait_until(http, job["id"])[0])["id"]
        template = http.get(f"/jobs/{template_id}").json()

        if "pickup" in parts:
            progress.part("pickup")
            results["pickup"] = pickup.measure(
                http, assets.model_id, assets.dataset_id, args.pickup_jobs
            )

        if "events" in parts:
            progress.part("events")
            results["events"] = events.measure(
                http,
                assets.model_id,
                assets.dataset_id,
                args.event_jobs,
                args.event_rounds,
                api_pid=stack.api.pid,
            )

        if "api" in parts:
            progress.part("api")
            results["api"] = api_load.load(
                stack.port,
                ["/healthz", f"/jobs/{template['id']}"],
                stack.api.pid,
                connections=args.connections,
                seconds=3.0,
                rounds=3,
                headers=(AUTH_HEADER,),  # authentication on: /healthz ignores it
            )
            results["api"]["paths"] = {
                path.replace(template["id"], "{id}"): x
                for path, x in results["api"]["paths"].items()
            }

        if "stores" in parts:  # GET /jobs/{id} on each store, an API process of its own
            progress.part("stores")
            results["stores"] = [
                store_reads.measure(store, ROOT, (AUTH_HEADER,), 3.0, admin_key=ADMIN_KEY)
                if store == "sqlite" or store_reads.postgres_available()
                else {"store": store, "skipped": f"no PostgreSQL at {store_reads.POSTGRES}"}
                for store in ("sqlite", "postgres")
            ]

        if "memory" in parts:
            progress.part("memory")
            results["memory"] = memory.measure(stack, http, scratch / "memory", args.transfer_bytes)

        if "downloads" in parts:
            progress.part("downloads")
            results["downloads"] = downloads.measure(stack, args.transfer_bytes)

        if "scaling" in parts:
            progress.part("scaling")
            results["scaling"] = scaling.measure(
                stack,
                http,
                assets.model_id,
                assets.dataset_id,
                template,
                args.scaling_levels,
                args.scaling_jobs,
            )

        if "fairness" in parts:  # after scaling: its 1000 jobs would fill the store first
            progress.part("fairness")
            results["fairness"] = fairness.measure(
                stack,
                http,
                assets,
                args.burst_jobs,
                args.burst_samples,
                stack.settings.tenant_inflight_jobs,
            )

        if "probes" in parts:
            progress.part("probes")
            results["probes"] = {
                "sandbox": probes.sandbox_seconds(stack, assets.model_id),
                "store_get": probes.store_get_us(stack, template["id"]),
                "api_variants": probes.api_variants(stack, template["id"], args.connections),
            }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": "make bench"
        if args.results_dir == BENCH
        else "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "settings": {
            "rounds": args.rounds,
            "pickup_jobs": args.pickup_jobs,
            "scaling_jobs": args.scaling_jobs,
            "scaling_levels": list(args.scaling_levels),
            "transfer_bytes": args.transfer_bytes,
            "connections": args.connections,
            "burst_jobs": args.burst_jobs,
            "parts": list(args.parts),
        },
    }
    OUT.mkdir(exist_ok=True)
    logs = OUT / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    stack = Stack(OUT / "scratch", logs)
    shutil.rmtree(stack.scratch, ignore_errors=True)
    print(f"starting Redis, the API and a worker (logs in {logs})", flush=True)
    try:
        stack.start()
        run(args, stack, results)
    except BaseException as exc:
        # A long run's finished parts are kept (bench/out) before the error goes up.
        results["runtime_s"] = time.perf_counter() - started
        results["error"] = repr(exc)
        OUT.joinpath("partial-results.json").write_text(json.dumps(results, indent=1) + "\n")
        print(f"failed; the parts done so far are in {OUT / 'partial-results.json'}")
        raise
    finally:
        stack.stop()
        if not args.keep:
            stack.remove_scratch()
    results["runtime_s"] = time.perf_counter() - started
    md, raw = report.write(results, args.results_dir)
    print(f"done in {results['runtime_s'] / 60:.1f} min: {md} and {raw}")
    for row in targets.rows(results):
        print(f"  {row.verdict:4s}  {row.number}  {row.figure}: {row.value} (target {row.target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
