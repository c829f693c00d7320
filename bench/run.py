"""`make bench`: start Redis, the API and a worker, run every measurement, write
bench/RESULTS.md and bench/results.json.

    python -m bench.run            # the full run (~10 minutes on 2 cores)
    python -m bench.run --quick    # a smoke run; writes to bench/out/ instead of bench/
"""

import argparse
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from bench import api_load, e2e, events, memory, pickup, probes, report, scaling
from bench.stack import ROOT, Stack, read_rss_bytes

BENCH = ROOT / "bench"
OUT = BENCH / "out"  # git-ignored: logs, scratch data


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; results in bench/out")
    parser.add_argument("--rounds", type=int, help="end-to-end rounds (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch data folder")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 5)
    args.pickup_jobs = 5 if quick else 50
    args.scaling_jobs = 3 if quick else 20
    args.scaling_levels = (100, 150) if quick else (100, 1000)
    args.transfer_bytes = (100 if quick else 1024) * 1024 * 1024
    args.connections = 16
    args.event_jobs = 3 if quick else 20
    args.event_rounds = 1 if quick else 3
    args.results_dir = OUT if quick else BENCH
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
    results["api_rss_at_start"] = read_rss_bytes(stack.api.pid)
    with httpx.Client(base_url=stack.url, headers=stack.admin_headers(), timeout=60) as http:
        progress.part("e2e")
        assets = e2e.prepare_assets(http, scratch / "assets")
        results["e2e"] = e2e.measure(http, stack, assets, scratch / "e2e", args.rounds)
        template = http.get(f"/jobs/{results['e2e']['runs']['c'][-1]['job_id']}").json()

        progress.part("pickup")
        results["pickup"] = pickup.measure(
            http, assets.model_id, assets.dataset_id, args.pickup_jobs
        )

        progress.part("events")
        results["events"] = events.measure(
            http, assets.model_id, assets.dataset_id, args.event_jobs, args.event_rounds
        )

        progress.part("api")
        results["api"] = api_load.load(
            stack.port,
            ["/healthz", f"/jobs/{template['id']}"],
            stack.api.pid,
            connections=args.connections,
            seconds=3.0,
            rounds=3,
        )
        results["api"]["paths"] = {
            path.replace(template["id"], "{id}"): x for path, x in results["api"]["paths"].items()
        }

        progress.part("memory")
        results["memory"] = memory.measure(stack, http, scratch / "memory", args.transfer_bytes)

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
        "command": "make bench" if not args.quick else "python -m bench.run --quick",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": report.machine_info(),
        "settings": {
            "rounds": args.rounds,
            "pickup_jobs": args.pickup_jobs,
            "scaling_jobs": args.scaling_jobs,
            "scaling_levels": list(args.scaling_levels),
            "transfer_bytes": args.transfer_bytes,
            "connections": args.connections,
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
    finally:
        stack.stop()
        if not args.keep:
            stack.remove_scratch()
    results["runtime_s"] = time.perf_counter() - started
    md, raw = report.write(results, args.results_dir)
    print(f"done in {results['runtime_s'] / 60:.1f} min: {md} and {raw}")
    for row in report.rows(results):
        print(f"  {row.verdict:4s}  {row.number}  {row.figure}: {row.value} (target {row.target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
