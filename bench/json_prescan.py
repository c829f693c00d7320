"""The JSON pre-scan's cost on hostile and valid bodies, and /healthz while one is refused.

    python -m bench.json_prescan                 # the scan and parse_json, 48 KB and 4 MiB
    python -m bench.json_prescan --old           # also the string regex k2e used before
    python -m bench.json_prescan --api           # also a real API process with /healthz polled

Writes bench/JSON_PRESCAN.md. The regex the pre-scan used until issue 20 backtracked on an
unterminated string of escapes (quadratic in the body, holding the GIL); ``--old`` times it
on small bodies only (48 KB already takes seconds).
"""

import argparse
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from k2e.errors import InvalidSpec
from service.submission import json_depth, parse_json

OUT = Path(__file__).with_name("JSON_PRESCAN.md")
MIB = 2**20

# The pre-scan's string pattern before issue 20, kept here only to measure it.
_OLD_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def hostile(size: int) -> dict[str, bytes]:
    """Bodies built to make a scanner backtrack or a parser recurse, cut to ``size`` bytes."""
    shapes = {
        '"\\" repeated (the report)': b'"' + b'\\"' * (size // 2),
        '" then a run of \\': b'"' + b"\\" * size,
        '" then \\x repeated': b'"' + b"\\x" * (size // 2),
        "many short strings": b'["' + b'","' * (size // 3) + b'"]',
        "unterminated string": b'"' + b"a" * size,
        "[ repeated": b"[" * size,
        "nested [0] lists, 1e400 last": b"[" + b"[0]," * (size // 4 - 2) + b"1e400]",
    }
    return {name: body[:size] for name, body in shapes.items()}


def valid(size: int) -> dict[str, bytes]:
    return {
        "flat array of 0": b"[" + b"0," * (size // 2 - 1) + b"0]",
        "objects with escaped strings": b"[" + b'{"k":"\\\\\\""},' * (size // 14 - 1) + b"0]",
    }


def timed(call: Callable[[], object]) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        call()
        outcome = "parsed"
    except InvalidSpec as exc:
        outcome = "422: " + exc.detail[:60]
    return time.perf_counter() - start, outcome


def scan_rows(sizes: list[int]) -> list[str]:
    rows = [
        "| body | bytes | parse_json (scan + parse) | json_depth alone | answer |",
        "|---|---|---|---|---|",
    ]
    for size in sizes:
        for name, body in {**hostile(size), **valid(size)}.items():
            total, outcome = timed(lambda body=body: parse_json(body, "the body"))
            scan, _ = timed(lambda body=body: json_depth(body))
            times = f"{total * 1000:.1f} ms | {scan * 1000:.1f} ms"
            rows.append(f"| {name} | {len(body):,} | {times} | {outcome} |")
    return rows


def old_rows(sizes: list[int]) -> list[str]:
    rows = ["| body | bytes | the old string regex |", "|---|---|---|"]
    for size in sizes:
        body = hostile(size)['"\\" repeated (the report)']
        start = time.perf_counter()
        _OLD_STRING.sub(b'""', body)
        rows.append(f"| the report's shape | {len(body):,} | {time.perf_counter() - start:.2f} s |")
    return rows


def api_rows() -> list[str]:
    import httpx

    from tests.support.api_keys import ADMIN, TEST_ADMIN_KEY
    from tests.support.api_server import running_api

    tmp = Path(tempfile.mkdtemp(prefix="k2e-prescan-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "K2E_DATABASE_URL")}
    env.update(K2E_DATA_DIR=str(tmp / "data"), K2E_ADMIN_KEY=TEST_ADMIN_KEY)
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/11")
    rows = [
        "| body (4 MiB) | answer | time to answer | /healthz calls meanwhile | max | median |",
        "|---|---|---|---|---|---|",
    ]
    with running_api(env, tmp / "api.log") as (base, _):
        for name, body in hostile(4 * MIB).items():
            answer: dict[str, tuple[int, float]] = {}

            def send(body: bytes = body, answer: dict[str, tuple[int, float]] = answer) -> None:
                start = time.perf_counter()
                response = httpx.post(
                    f"{base}/convert",
                    content=body,
                    headers={**ADMIN, "content-type": "application/json"},
                    timeout=600,
                )
                answer["r"] = (response.status_code, time.perf_counter() - start)

            sender = threading.Thread(target=send)
            sender.start()
            waits = []
            while sender.is_alive():
                start = time.perf_counter()
                httpx.get(f"{base}/healthz", timeout=600)
                waits.append(time.perf_counter() - start)
            sender.join()
            waits.sort()
            status, took = answer["r"]
            rows.append(
                f"| {name} | {status} | {took:.2f} s | {len(waits)} | "
                f"{waits[-1] * 1000:.0f} ms | {waits[len(waits) // 2] * 1000:.1f} ms |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", action="store_true", help="also time the old string regex")
    parser.add_argument("--api", action="store_true", help="also a real API process")
    args = parser.parse_args()
    flags = (" --old" if args.old else "") + (" --api" if args.api else "")
    lines = [
        "# The JSON pre-scan",
        "",
        f"`python -m bench.json_prescan{flags}`, load average at start "
        f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} cores).",
        "",
        *scan_rows([48 * 1024, 4 * MIB]),
    ]
    if args.old:
        lines += ["", *old_rows([12 * 1024, 24 * 1024, 48 * 1024])]
    if args.api:
        lines += ["", *api_rows()]
    text = "\n".join(lines) + "\n"
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
