"""Bucket storage against the local folder, in one run: two k2e stacks side by side (one on
the default local folder, one with K2E_STORAGE_URL on a SeaweedFS it starts,
tests/support/s3_server.py), each with its own Redis, API and worker.

    python -m bench.storage [--rounds 5] [--mib 1024] [--cache-mib 200] [--transfer-rounds 2]

Writes bench/out/storage.json (every raw number) and bench/out/storage.md (the table).
"""

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench import client as rest
from bench.e2e import (
    PHASES,
    WARMUP_STEPS,
    WarmHelper,
    direct_rate,
    k2e_run,
    prepare_assets,
    worker_phases_s,
)
from bench.harness import ADMIN_KEY, ROOT, Stack
from bench.storage_parts import cache, concurrent_local, transfers
from bench.workload import STEPS, convert_spec
from tests.support.s3_server import S3Server

OUT = ROOT / "bench" / "out"
PREFIX = "k2e"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def end_to_end(
    local: Stack, bucket: Stack, workdir: Path, rounds: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """Rounds of (a) warm direct, (L) k2e on the local folder, (B) k2e on the bucket,
    rotating the order each round (a L B, L B a, B a L, ...)."""
    clients = {
        name: httpx.Client(base_url=s.url, headers=AUTH, timeout=600)
        for name, s in (("L", local), ("B", bucket))
    }
    assets = prepare_assets(clients["L"], workdir / "assets")
    ids = {"L": (assets.model_id, assets.dataset_id)}
    model = rest.upload(clients["B"], "/models", assets.h5)
    ids["B"] = (model["id"], rest.upload(clients["B"], "/datasets", assets.npz)["id"])
    helper = WarmHelper(local.logs / "direct-warm.log")
    runs: dict[str, list[dict[str, Any]]] = {"a": [], "L": [], "B": []}
    try:
        helper.run(workdir / "warmup-a", assets.npz, WARMUP_STEPS)
        for name, client in clients.items():
            k2e_run(client, convert_spec(*ids[name], WARMUP_STEPS))
        order = ["a", "L", "B"]
        for i in range(rounds):
            for case in order[i % 3 :] + order[: i % 3]:
                if case == "a":
                    model_dir = workdir / f"round{i}-a"
                    result = helper.run(model_dir, assets.npz, STEPS)
                    result["steps_per_sec"] = direct_rate(model_dir)
                    shutil.rmtree(model_dir, ignore_errors=True)
                else:
                    result = k2e_run(clients[case], convert_spec(*ids[case], STEPS))
                result["round"], result["load1"] = i, os.getloadavg()[0]
                runs[case].append(result)
                print(f"  e2e round {i} ({case}): {result['wall_s']:.2f} s", flush=True)
    finally:
        helper.close()
        for client in clients.values():
            client.close()
    for case, stack in (("L", local), ("B", bucket)):
        for result in runs[case]:
            result["phases_s"] = worker_phases_s(stack.logs / "worker.log", result["job_id"])
    median = {c: statistics.median(r["wall_s"] for r in rs) for c, rs in runs.items()}
    rates = {
        c: statistics.median(r["steps_per_sec"] for r in rs if r["steps_per_sec"])
        for c, rs in runs.items()
    }
    parts = {
        c: {
            p: statistics.median(r.get(p) or r["phases_s"].get(p, 0.0) for r in runs[c])
            for p in ("post_s", "pickup_s", "worker_s", *PHASES)
        }
        for c in ("L", "B")
    }
    summary = {
        "runs": runs,
        "median_s": median,
        "ratio_local": median["L"] / median["a"],
        "ratio_bucket": median["B"] / median["a"],
        "steps_per_sec": rates,
        "throughput_ratio": rates["B"] / rates["L"],
        "parts_s": parts,
    }
    return summary, {"B": ids["B"][0]}


def table(results: dict[str, Any]) -> list[tuple[str, float, str, bool, str]]:
    """(figure, value, target, met, detail) rows."""
    e2e, tr, ca, cc = (results.get(k) for k in ("e2e", "transfers", "cache", "concurrent"))
    rows = []
    if e2e:
        m = e2e["median_s"]
        n = len(e2e["runs"]["a"])
        rows.append(
            (
                f"end to end, local folder / warm direct, median of {n}",
                e2e["ratio_local"],
                "<= 1.10",
                e2e["ratio_local"] <= 1.10,
                f"{m['L']:.2f} s / {m['a']:.2f} s",
            )
        )
        rows.append(
            (
                f"end to end, bucket / warm direct, median of {n}",
                e2e["ratio_bucket"],
                "<= 1.15",
                e2e["ratio_bucket"] <= 1.15,
                f"{m['B']:.2f} s / {m['a']:.2f} s",
            )
        )
        r = e2e["steps_per_sec"]
        rows.append(
            (
                "training steps/s, bucket / local model_dir",
                e2e["throughput_ratio"],
                ">= 0.97",
                e2e["throughput_ratio"] >= 0.97,
                f"{r['B']:.0f} / {r['L']:.0f} steps/s",
            )
        )
    if tr:
        m, mb = tr["median_mb_s"], tr["size_bytes"] // 2**20
        rows.append(
            (
                f"{mb} MiB checkpoint download, API / boto3 get_object",
                tr["get_ratio"],
                ">= 0.8",
                tr["get_ratio"] >= 0.8,
                f"{m['api_get']:.0f} / {m['boto_get']:.0f} MB/s",
            )
        )
        rows.append(
            (
                f"{mb} MiB upload, API POST /datasets / boto3 upload_file",
                tr["put_ratio"],
                ">= 0.8",
                tr["put_ratio"] >= 0.8,
                f"{m['api_put']:.0f} / {m['boto_put']:.0f} MB/s",
            )
        )
    if ca:
        rows.append(
            (
                "worker cache: time to first step, second job / first",
                ca["ratio"],
                "<= 0.5",
                ca["ratio"] <= 0.5,
                f"{ca['median_second_s']:.2f} s / {ca['median_first_s']:.2f} s (medians)",
            )
        )
    if cc:
        m = cc["median_mb_s"]
        rows.append(
            (
                "8 concurrent downloads, local folder: API / sendfile",
                cc["ratio"],
                ">= 0.5",
                cc["ratio"] >= 0.5,
                f"{m['api']:.0f} / {m['sendfile']:.0f} MB/s",
            )
        )
    return rows


def write_table(results: dict[str, Any], path: Path) -> None:
    lines = ["| figure | value | target | result | detail |", "| --- | --- | --- | --- | --- |"]
    for figure, value, target, met, detail in table(results):
        result = "PASS" if met else "MISS"
        lines.append(f"| {figure} | {value:.2f} | {target} | {result} | {detail} |")
    lines.append("")
    lines.append(f"load average (1 min) when each part started: {results['load']}")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=1024, help="size of the 1 GB transfers")
    parser.add_argument("--cache-mib", type=int, default=200)
    parser.add_argument("--cache-rounds", type=int, default=3)
    parser.add_argument("--transfer-rounds", type=int, default=2)
    parser.add_argument(
        "--only", action="append", choices=["e2e", "transfers", "cache", "concurrent"]
    )
    args = parser.parse_args()
    parts = args.only or ["e2e", "transfers", "cache", "concurrent"]
    scratch = OUT / "storage-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    workdir = scratch / "work"
    workdir.mkdir(parents=True)
    server = S3Server(scratch / "s3").start()
    limits = {"K2E_MAX_UPLOAD_BYTES": str(4 * 2**30)}
    local = Stack(scratch / "local", OUT / "logs-storage" / "local", env=limits)
    bucket = Stack(
        scratch / "bucket", OUT / "logs-storage" / "bucket", env={**limits, **server.env(PREFIX)}
    )
    shutil.rmtree(OUT / "logs-storage", ignore_errors=True)
    results: dict[str, Any] = {"args": vars(args), "load": {}, "cpus": os.cpu_count()}
    try:
        local.start()
        bucket.start()
        model_ids: dict[str, str] = {}
        for part in parts:
            results["load"][part] = round(os.getloadavg()[0], 2)
            print(f"{part} (load {results['load'][part]})", flush=True)
            started = time.perf_counter()
            if part == "e2e":
                results["e2e"], model_ids = end_to_end(local, bucket, workdir, args.rounds)
            elif part == "transfers":
                results["transfers"] = transfers(
                    bucket, local, server, PREFIX, args.mib * 2**20, args.transfer_rounds, workdir
                )
            elif part == "cache":
                if not model_ids:
                    http = httpx.Client(base_url=bucket.url, headers=AUTH)
                    h5 = prepare_assets(http, workdir / "assets").h5
                    model_ids["B"] = rest.upload(http, "/models", h5)["id"]
                    http.close()
                results["cache"] = cache(
                    bucket, model_ids["B"], args.cache_rounds, args.cache_mib, workdir
                )
            else:
                results["concurrent"] = concurrent_local(local, args.mib * 2**20)
            results.setdefault("part_s", {})[part] = time.perf_counter() - started
            (OUT / "storage.json").write_text(json.dumps(results, indent=1, default=str))
    finally:
        local.stop()
        bucket.stop()
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    write_table(results, OUT / "storage.md")


if __name__ == "__main__":
    main()
