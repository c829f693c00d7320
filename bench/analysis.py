"""RESULTS.md's prose: where each figure's time goes, from this run's own probes."""

import statistics
from typing import Any

from bench.e2e import POLL_S

MB = 1024 * 1024


def analysis(r: dict[str, Any]) -> list[str]:
    lines = ["## Where the time goes (k2e's part, TensorFlow's part, fixes)", ""]
    for part in (_e2e, _throughput, _api, _memory):
        lines += part(r)
    return lines


def details(r: dict[str, Any]) -> list[str]:
    lines = ["## Details", ""]
    for part in (_e2e_runs, _pickup_details, _api_details, _scaling_details):
        lines += part(r)
    return lines


def _e2e(r: dict[str, Any]) -> list[str]:
    if "e2e" not in r or "probes" not in r:
        return []
    e, p = r["e2e"], r["probes"]
    m, parts = e["median_s"], e["c_parts_s"]
    sandbox = p["sandbox"]["median_s"]
    without = (m["c"] - 2 * sandbox) / m["a"]
    phases = e["a_phases_s"]
    return [
        "### 1. End-to-end overhead",
        "",
        f"(c) - (a) = {m['c'] - m['a']:.2f} s (medians). (c)'s wall time is POST /convert + "
        "queue pickup + the worker's time + the client's polling lag, each measured per run "
        "(medians over the rounds below, so they need not add up exactly):",
        "",
        "| part of (c) | median | whose |",
        "| --- | --- | --- |",
        f"| POST /convert answered (client-observed) | {parts['post_s']:.2f} s | k2e: the "
        "API inspects the HDF5 again in its sandbox child process (one inspection took "
        f"{sandbox:.2f} s, median of 5 probes in this run) |",
        f"| queue pickup, `started_at - created_at` | {parts['pickup_s']:.3f} s | k2e + Celery |",
        f"| the worker's time, `finished_at - started_at` | {parts['worker_s']:.2f} s | |",
        f"| ... minus (a)'s whole run, same round | {parts['worker_minus_a_s']:.2f} s | k2e: "
        f"the worker inspects the file once more before loading it ({sandbox:.2f} s); then "
        "HDF5 load + recompile, progress and log writes, and TensorFlow's run-to-run noise |",
        f"| polling lag (GET every {POLL_S:.1f} s) | {parts['lag_s']:.2f} s | the bench |",
        "",
        f"TensorFlow's own work is the same in (a) and (c) (same model, RunConfig, input "
        f"pipeline, eval and export); (a)'s phases: build + model_to_estimator "
        f"{phases['build_s']:.2f} s, train {phases['train_s']:.2f} s, evaluate "
        f"{phases['eval_s']:.2f} s, export {phases['export_s']:.2f} s. Each sandbox "
        "inspection is a fresh `python -m k2e.sandbox` (interpreter start plus importing "
        "numpy, h5py, pydantic and k2e), run twice per job on a file that has not changed "
        "since POST /models inspected it.",
        "",
        "Fix (files I do not own): inspect an upload once. POST /models already stores the "
        "model's summary in `info.json` with its sha256; `k2e/validation.py::resolve_model` "
        "could reuse it (a storage entry is immutable by id; the worker can re-hash the file "
        "in milliseconds instead of re-parsing it). Without the two inspections, (c)/(a) "
        f"would be about ({m['c']:.2f} - 2 x {sandbox:.2f}) / {m['a']:.2f} = {without:.2f}. "
        "A pre-forked sandbox (imports done once, one fork per file) would keep the "
        "isolation and remove most of the cost too.",
        "",
    ]


def _throughput(r: dict[str, Any]) -> list[str]:
    if "e2e" not in r:
        return []
    e = r["e2e"]
    a = [x["steps_per_sec"] for x in e["runs"]["a"]]
    c = [x["steps_per_sec"] for x in e["runs"]["c"]]
    paired = [y / x for x, y in zip(a, c, strict=True)]
    return [
        "### 2. Training throughput",
        "",
        f"`global_step/sec` medians per run: direct (a) {_list(a)} (spread {_spread(a)}); "
        f"worker (c) {_list(c)} (spread {_spread(c)}); (c)/(a) paired by round "
        f"{', '.join(f'{x:.2f}' for x in paired)}. Both series are the Estimator's own "
        "TensorBoard summaries (the worker's served by GET /jobs/{id}/metrics, the direct "
        "runs' read from their model_dir by the same parser, `k2e.tfevents`), so they count "
        "TensorFlow's steps the same way. What k2e adds inside training: a ProgressHook "
        "(it fetches `global_step` and the loss with every step and writes progress to the "
        "store every 100 steps or 2 s), a log handler on TensorFlow's logger at INFO and a "
        "heartbeat thread that renews the lease every 5 s.",
        "",
    ]


def _spread(values: list[float]) -> str:
    low, high = min(values), max(values)
    half = (high - low) / 2 / statistics.median(values) * 100
    return f"{low:.0f}-{high:.0f}, ±{half:.0f}%"


def _api(r: dict[str, Any]) -> list[str]:
    if "api" not in r or "probes" not in r:
        return []
    a, p = r["api"], r["probes"]
    v = p["api_variants"]
    jobs, health = a["paths"]["/jobs/{id}"], a["paths"]["/healthz"]
    store = p["store_get"]
    lines = [
        "### 4. API throughput",
        "",
        f"The server process used {jobs['server_cores']:.2f} cores during the /jobs/{{id}} "
        f"phases and {health['server_cores']:.2f} during /healthz: one uvicorn process is "
        "CPU-bound on one core (the GIL), so req/s is the inverse of its CPU time per "
        f"request. The load generator (Python asyncio, raw HTTP/1.1 keep-alive, in its own "
        f"process) used {jobs['generator_cores']:.2f} / {health['generator_cores']:.2f} "
        "cores: it competes with the server for the 2 CPUs, but leaves the server its core.",
        "",
        "Variants of the same routes (`bench/probe_app.py`, a second uvicorn process on the "
        "same store, same load, same run):",
        "",
        "| route | req/s | p50 | p99 | server cores |",
        "| --- | --- | --- | --- | --- |",
    ]
    labels = {
        "/healthz": "k2e `/healthz` (sync `def`: one threadpool hop)",
        "/probe/healthz": "`/healthz` as `async def` (the framework's ceiling)",
        "/jobs/{id}": "k2e `/jobs/{id}` (3 hops: `_job_id`, `_store`, endpoint)",
        "/probe/jobs-1hop/{id}": "dependencies `async def`, endpoint sync (1 hop)",
        "/probe/jobs-0hop/{id}": "endpoint `async def` too (0 hops)",
        "/probe/jobs-0hop-prebuilt/{id}": "0 hops + a prebuilt SELECT",
    }
    for path, label in labels.items():
        x = v[path]
        lat = x["latency_ms"]
        lines.append(
            f"| {label} | {x['rps']:.0f} | {lat['p50']:.1f} ms | {lat['p99']:.1f} ms | "
            f"{x['server_cores']:.2f} |"
        )
    ceiling = v["/probe/healthz"]["rps"]
    best = v["/probe/jobs-0hop-prebuilt/{id}"]["rps"]
    lines += [
        "",
        f"k2e's part: every sync `def` dependency and endpoint is a trip through AnyIO's "
        f"thread pool; GET /jobs/{{id}} makes three. `JobStore.get` costs "
        f"{store['jobstore_get_us']:.0f} µs per call (it builds and cache-keys a 21-column "
        f"SELECT every time) against {store['prebuilt_us']:.0f} µs with the statement built "
        "once. The framework's part: FastAPI + Starlette + uvicorn's pure-Python h11 "
        f"serve an empty `async def` route at {ceiling:.0f} req/s on this core, so "
        "1500 req/s for a route that also reads the store is out of reach for one process "
        "here. Fixes (service/, k2e/): make `service/deps.py`'s providers and "
        "`service/routes/jobs.py::_job_id` `async def` (they do no I/O) and `/healthz` "
        "`async def`; serve GET /jobs/{id} from an `async def` (a SQLite primary-key read "
        "is sub-millisecond) or keep one hop; prebuild `JobStore`'s hot SELECTs. With all "
        f"of them this run measured {best:.0f} req/s. Beyond that: more uvicorn processes "
        "(`--workers`) on a machine with cores to spare, and `uvicorn[standard]` "
        "(httptools, uvloop) in pyproject.toml.",
        "",
    ]
    return lines


def _memory(r: dict[str, Any]) -> list[str]:
    if "memory" not in r:
        return []
    d = r["memory"]["download"]
    z = d["zlib_mb_s"]
    ratio = d["archive_bytes"] / r["memory"]["size_bytes"]
    return [
        "### 5. Download throughput",
        "",
        f"GET /jobs/{{id}}/checkpoints/{{step}} streams a tar.gz built on the fly "
        f"(`service/archive.py`, `zlib.compressobj(6)`), so it runs at the speed of deflate "
        f"on one core: {d['mb_s']:.0f} MB/s, while reading the same file (page cache warm) "
        f"runs at {d['disk_mb_s']:.0f} MB/s. Checkpoint weights are float32 and barely "
        f"compress (archive / payload = {ratio:.2f}). zlib on the first 64 MB of the same "
        f"file, in this run: level 6 {z['6']:.0f} MB/s, level 1 {z['1']:.0f} MB/s, level 0 "
        f"(stored blocks, still valid gzip) {z['0']:.0f} MB/s. This is k2e's choice of "
        "compression, not TensorFlow's. Fix: `compressobj(0)` (or 1) for checkpoints and "
        "SavedModels, keeping `application/gzip` and the contract's tar.gz; or offer a "
        "plain tar. Memory stays flat either way: both transfers stream in 1 MB chunks.",
        "",
    ]


def _e2e_runs(r: dict[str, Any]) -> list[str]:
    if "e2e" not in r:
        return []
    e = r["e2e"]
    lines = [
        f"### 1-2. End-to-end runs ({e['steps']} steps, evaluate, export)",
        "",
        "| round | (a) warm direct | (b) cold script | (c) k2e | (c): POST /convert | "
        "pickup | worker | lag | steps/s (a) | steps/s (c) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a, b, c in zip(e["runs"]["a"], e["runs"]["b"], e["runs"]["c"], strict=True):
        lines.append(
            f"| {a['round']} | {a['wall_s']:.2f} s | {b['wall_s']:.2f} s | {c['wall_s']:.2f} s "
            f"| {c['post_s']:.2f} s | {c['pickup_s']:.3f} s | {c['worker_s']:.2f} s "
            f"| {c['lag_s']:.2f} s | {a['steps_per_sec']:.0f} | {c['steps_per_sec']:.0f} |"
        )
    return [*lines, ""]


def _pickup_details(r: dict[str, Any]) -> list[str]:
    if "pickup" not in r:
        return []
    p = r["pickup"]
    lines = [
        f"### 3. Queue pickup ({p['jobs']} jobs: 1 step, no eval, no export)",
        "",
        "| figure | p50 | p90 | p99 | max |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, label in (
        ("server_ms", "`started_at - created_at`"),
        ("client_ms", "client: 202 → first GET not `queued` (10 ms polls)"),
        ("post_convert_ms", "POST /convert answered (includes the sandbox inspection)"),
    ):
        x = p[key]
        lines.append(
            f"| {label} | {x['p50']:.1f} ms | {x['p90']:.1f} ms | {x['p99']:.1f} ms | "
            f"{x['max']:.1f} ms |"
        )
    return [*lines, ""]


def _api_details(r: dict[str, Any]) -> list[str]:
    if "api" not in r:
        return []
    a = r["api"]
    lines = [
        f"### 4. API load ({a['connections']} connections, phases alternating between paths)",
        "",
        "| path | requests | errors | req/s | p50 | p99 | server cores | generator cores |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for path, x in a["paths"].items():
        lat = x["latency_ms"]
        lines.append(
            f"| `{path}` | {x['requests']} | {x['errors']} | {x['rps']:.0f} | "
            f"{lat['p50']:.1f} ms | {lat['p99']:.1f} ms | {x['server_cores']:.2f} | "
            f"{x['generator_cores']:.2f} |"
        )
    return [*lines, ""]


def _scaling_details(r: dict[str, Any]) -> list[str]:
    if "scaling" not in r:
        return []
    s = r["scaling"]
    lines = [
        "### 6. Scaling (p50 / p99; latency with one connection)",
        "",
        "| jobs in store | GET /jobs/{id} | GET /jobs?limit=50 | pickup (server) | "
        "pickup (client) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for level in s["levels"].values():
        cells = [
            f"{level[k]['p50']:.1f} / {level[k]['p99']:.1f} ms"
            for k in ("get_job_ms", "list_jobs_ms", "pickup_server_ms", "pickup_client_ms")
        ]
        lines.append(f"| {level['jobs_in_store']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Criterion: flat when p50 at the larger store / p50 at the smaller ≤ "
        f"{s['flat_ratio']}. Jobs are read by primary key or unique id, pages by the "
        "`seq` primary key (newest first, LIMIT 51): no figure depends on the store's size.",
        "",
    ]
    return lines


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)
