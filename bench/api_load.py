"""Measurement 4 (and the latency half of 6): HTTP load on the API from a separate process.

The generator is this module run as a script: asyncio streams speaking HTTP/1.1
keep-alive over loopback (a minimal client, so that the generator spends as little
CPU as possible: it shares the 2 cores with the server). Each of ``--connections``
connections sends one request at a time; a phase ends after ``--seconds`` or
``--max-requests``, whichever comes first. Phases alternate between the paths
(``--rounds`` times), so drift hits every path alike. It prints one JSON document:
per path, requests, errors, req/s, latency percentiles; the generator's own CPU use;
and the server's CPU use (from /proc) during the phases of each path.

    python -m bench.api_load --port P --path /healthz --path /jobs/ID --seconds 4
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.stats import percentiles

ROOT = Path(__file__).resolve().parents[1]


class Phase:
    def __init__(self, deadline: float, max_requests: int) -> None:
        self.deadline = deadline
        self.left = max_requests
        self.latencies: list[float] = []
        self.errors = 0

    def take(self) -> bool:
        if self.left <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.left -= 1
        return True


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _connection(host: str, port: int, request: bytes, phase: Phase) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while phase.take():
            started = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            if status == 200:
                phase.latencies.append(time.perf_counter() - started)
            else:
                phase.errors += 1
    finally:
        writer.close()


async def run_phase(
    host: str,
    port: int,
    path: str,
    connections: int,
    seconds: float,
    max_requests: int,
    headers: tuple[str, ...] = (),
) -> tuple[Phase, float]:
    extra = "".join(f"{header}\r\n" for header in headers)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
    phase = Phase(time.perf_counter() + seconds, max_requests)
    started = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, request, phase) for _ in range(connections)))
    return phase, time.perf_counter() - started


def _server_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def generate(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {
        path: {"latencies": [], "errors": 0, "elapsed": 0.0, "server_cpu": 0.0, "own_cpu": 0.0}
        for path in args.path
    }
    headers = tuple(args.header or ())
    for path in args.path:  # warm-up: connections, caches, the server's thread pool
        await run_phase(args.host, args.port, path, args.connections, args.warmup, 10**9, headers)
    for _ in range(args.rounds):
        for path in args.path:
            cpu0, own0 = _server_cpu(args.server_pid), _own_cpu()
            phase, elapsed = await run_phase(
                args.host,
                args.port,
                path,
                args.connections,
                args.seconds,
                args.max_requests,
                headers,
            )
            result = results[path]
            result["latencies"] += phase.latencies
            result["errors"] += phase.errors
            result["elapsed"] += elapsed
            result["server_cpu"] += _server_cpu(args.server_pid) - cpu0
            result["own_cpu"] += _own_cpu() - own0
    return {
        "connections": args.connections,
        "paths": {path: _summary(r) for path, r in results.items()},
    }


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    latencies = result["latencies"]
    elapsed = result["elapsed"]
    return {
        "requests": len(latencies),
        "errors": result["errors"],
        "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "latency_ms": percentiles([x * 1000 for x in latencies]),
        # CPU cores busy on average: 1.0 is one core fully used.
        "server_cores": result["server_cpu"] / elapsed if elapsed else 0.0,
        "generator_cores": result["own_cpu"] / elapsed if elapsed else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", action="append", required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--header", action="append", help='"Name: value", sent on every request')
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("loopback only")
    print(json.dumps(asyncio.run(generate(args))))
    return 0


def load(
    port: int,
    paths: list[str],
    server_pid: int | None,
    connections: int = 16,
    seconds: float = 4.0,
    rounds: int = 2,
    max_requests: int = 100_000,
    warmup: float = 1.0,
    headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run the generator in its own process; returns its JSON answer."""
    command = [sys.executable, "-m", "bench.api_load", "--port", str(port)]
    for path in paths:
        command += ["--path", path]
    command += ["--connections", str(connections), "--seconds", str(seconds)]
    command += ["--rounds", str(rounds), "--max-requests", str(max_requests)]
    command += ["--warmup", str(warmup)]
    if server_pid is not None:
        command += ["--server-pid", str(server_pid)]
    for header in headers:
        command += ["--header", header]
    timeout = 60 + len(paths) * (rounds * seconds + warmup) * 2
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=True
    )
    return json.loads(done.stdout)


if __name__ == "__main__":
    sys.exit(main())
