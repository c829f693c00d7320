"""RESULTS.md's prose: where each figure's time goes, from this run's own probes."""

import statistics
from typing import Any

from bench.e2e import FAST_ETA_S, POLL_S, POLL_TRAINING_S

MB = 1024 * 1024


def analysis(r: dict[str, Any]) -> list[str]:
    lines = ["## Where the time goes (k2e's part, TensorFlow's part, fixes)", ""]
    for part in (_e2e, _throughput, _api, _memory, _downloads, _fairness):
        lines += part(r)
    return lines


def details(r: dict[str, Any]) -> list[str]:
    lines = ["## Details", ""]
    for part in (_e2e_runs, _pickup_details, _api_details, _scaling_details):
        lines += part(r)
    return lines


def _phase_rows(e: dict[str, Any]) -> list[str]:
    """The worker's phases (its log) beside (a)'s same phases."""
    c, a = e.get("c_phases_s") or {}, e["a_phases_s"]
    rows = {
        "training": ("train", "TensorFlow's training with k2e's hooks and input pipeline"),
        "evaluating": ("eval", "TensorFlow's evaluation, reading the data through k2e's input"),
        "exporting": ("export", "TensorFlow's export to a staging folder"),
        "verifying the export": (
            None,
            "k2e: the export loaded once in a fresh graph, each signature run on up to 256 "
            "evaluation examples and compared with the predictions the Estimator made for "
            "them while evaluating (worker/reference.py: no separate predict), then TF "
            "Serving warm-up requests written; (a) does neither",
        ),
    }
    out = []
    for phase, (a_key, whose) in rows.items():
        if phase not in c:
            continue
        versus = f"; (a): {a[a_key + '_s']:.2f} s" if a_key and f"{a_key}_s" in a else ""
        out.append(f"| ... {phase} (worker log) | {c[phase]:.2f} s | {whose}{versus} |")
    return out


def _events_lines(e: dict[str, Any]) -> list[str]:
    """(d), the same job followed through GET /jobs/{id}/events, beside (c)."""
    ev = e.get("events") or {}
    if "paired_ratio_d_a" not in ev:
        return []
    d_phases, c_phases = ev.get("phases_s") or {}, e.get("c_phases_s") or {}
    both = [p for p in d_phases if p in c_phases]
    return [
        f"(d), the same job followed through its event stream until `end`: median "
        f"{ev['median_s']:.2f} s, (d)/(a) {ev['ratio_c_a']:.2f} as the ratio of the medians "
        f"and {ev['paired_ratio_d_a']:.2f} as the median of the per-round ratios. Its "
        "worker phases (medians, (d) against (c)): "
        + "; ".join(f"{p} {d_phases[p]:.2f} s against {c_phases[p]:.2f} s" for p in both)
        + ". The stream adds no step of its own between the worker's last write and the "
        "client (figure 7: the `end` event's delay), so a difference between (d) and (c) "
        "lies in the phases above, where both run the same worker code.",
        "",
    ]


def _e2e(r: dict[str, Any]) -> list[str]:
    if "e2e" not in r or "probes" not in r:
        return []
    e, p = r["e2e"], r["probes"]
    m, parts, phases = e["median_s"], e["c_parts_s"], e["a_phases_s"]
    sandbox = p["sandbox"]["median_s"]
    prefix = e["worker_prefix_s"]
    post = parts["post_s"]
    api_inspects = post >= sandbox / 2
    worker_extra = (prefix - phases["build_s"]) if prefix is not None else None
    # The worker's log says whether it inspected the file again (bench/e2e.py); results
    # from before that line existed fall back to the time it took.
    worker_inspects = e.get(
        "worker_inspected", worker_extra is not None and worker_extra >= sandbox / 2
    )
    inspections = int(api_inspects) + int(worker_inspects)
    post_whose = (
        f"k2e: it includes a sandbox inspection of the HDF5 (one inspection: {sandbox:.2f} s "
        f"median, {p['sandbox']['min_s']:.2f} s min, 5 probes in this run)"
        if api_inspects
        else f"k2e (no file inspection on this path: a sandbox inspection takes {sandbox:.2f} s)"
    )
    prefix_cell = f"{prefix:.2f} s" if prefix is not None else "n/a"
    extra_cell = f"{worker_extra:.2f} s" if worker_extra is not None else "n/a"
    lines = [
        "### 1. End-to-end overhead",
        "",
        f"(c) - (a): {m['c'] - m['a']:.2f} s between the medians; {parts['minus_a_s']:.2f} s "
        f"as the median of the per-round differences (per-round (c)/(a) median: "
        f"{e['paired_ratio_c_a']:.2f}). (a) itself varied by "
        f"{_spread([x['wall_s'] for x in e['runs']['a']], 's', 2)} between rounds: on this "
        "shared machine the ratio moves from run to run; the parts of (c) below are "
        "steadier. (c)'s wall time is POST /convert + queue pickup + the "
        "worker's time + the client's polling lag, each measured per run (medians, so they "
        "need not add up exactly):",
        "",
        "| part of (c) | median | whose |",
        "| --- | --- | --- |",
        f"| POST /convert answered (client-observed) | {post:.2f} s | {post_whose} |",
        f"| queue pickup, `started_at - created_at` | {parts['pickup_s'] * 1000:.0f} ms | "
        "k2e + Celery |",
        f"| the worker's time, `finished_at - started_at` | {parts['worker_s']:.2f} s | |",
        f"| ... of which: from taking the job to the end of model_to_estimator (worker log: "
        f"the Estimator's `Using config` line) | {prefix_cell} | k2e's spec checks, HDF5 load "
        f"and compile, then TensorFlow's model_to_estimator; the same part of (a) (model "
        f"built in code, model_to_estimator) took {phases['build_s']:.2f} s, so k2e adds "
        f"{extra_cell} here |",
        *_phase_rows(e),
        f"| ... the worker's time minus (a)'s whole run, same round | "
        f"{parts['worker_minus_a_s']:.2f} s | k2e (the rows above) + TensorFlow's run-to-run "
        "noise |",
        f"| polling lag (GET every {POLL_TRAINING_S} s while training, every {POLL_S} s "
        f"near the end: the last progress step or an ETA under {FAST_ETA_S} s) | "
        f"{parts['lag_s']:.2f} s | the bench |",
        "",
        *_events_lines(e),
        "TensorFlow's work is the same in (a) and (c): same model, RunConfig, evaluation "
        "and export. The input pipelines differ: (a) feeds the arrays with "
        "`from_tensor_slices`, the worker reads the npz a chunk at a time through a "
        "`numpy_function` map and keeps data this small in memory after its first pass "
        "(K2E_DATASET_CACHE_BYTES); read alone (`python -m bench.input_pipeline`, 2000 "
        "batches in a session, 2 rounds, on this machine beside this run) the worker's "
        "pipeline gave 1937 and 1901 batches/s against 1802 and 1940 for (a)'s, with the "
        "same CPU (1.25-1.29 s against 1.29-1.32 s), so it is not where training's gap is. "
        "(a)'s phases: Keras model "
        f"{phases['model_s']:.2f} s, model_to_estimator "
        f"{phases['build_s'] - phases['model_s']:.2f} s, train {phases['train_s']:.2f} s, "
        f"evaluate {phases['eval_s']:.2f} s, export {phases['export_s']:.2f} s.",
        "",
    ]
    if inspections:
        where = " and ".join(
            w
            for w, yes in (("POST /convert", api_inspects), ("the worker", worker_inspects))
            if yes
        )
        without = (m["c"] - inspections * sandbox) / m["a"]
        lines += [
            f"The k2e time that matters is the sandbox inspection of the uploaded HDF5, which "
            f"{where} still {'run' if inspections > 1 else 'runs'} on every job although "
            "the file has not changed since POST /models inspected it: a fresh `python -m "
            "k2e.vetting.child` (interpreter start, imports of numpy, h5py, pydantic and k2e, "
            "then "
            f"the file). Without it, (c)/(a) would be about ({m['c']:.2f} - {inspections} x "
            f"{sandbox:.2f}) / {m['a']:.2f} = {without:.2f}. Fix (files I do not own): reuse "
            "the inspection stored at upload in the worker too (`check_spec` in "
            "`worker/training.py` → `k2e/spec/checks.py::resolve_model`), checking the file's "
            "sha256 against `info.json` if the storage volume is not trusted; or a pre-forked "
            "sandbox (imports done once, one fork per file).",
            "",
        ]
    if not worker_inspects:
        lines += [
            "The worker no longer inspects the upload in a sandbox child: a model whose "
            "sha256 still matches the one the job store recorded at POST /models keeps the "
            "inspection stored then, its configs vetted again in-process "
            f"(`k2e/vetting/stored.py`; a sandbox inspection would take {sandbox:.2f} s). "
            "The worker's time before the Estimator exists is then k2e loading and "
            "compiling the HDF5 (the direct run builds the model in code; measured in-"
            "process, the two take the same time) and TensorFlow's model_to_estimator.",
            "",
        ]
    if worker_extra is not None and worker_inspects and worker_extra - sandbox > 0.1:
        lines += [
            f"The rest of the worker's extra time before training "
            f"({worker_extra - sandbox:.2f} s) is k2e loading the model from its HDF5 and "
            "compiling it again (the direct run builds it in code), plus job-store writes; "
            "both are inherent to running uploaded files.",
            "",
        ]
    return lines


# bench/training_gap.py, run beside `make bench` on this machine (5 alternating rounds).
IN_PROCESS = (
    "Every piece of k2e that runs inside training, added one at a time in one process "
    "(`python -m bench.training_gap 5`: the model loaded from HDF5 and compiled by the "
    "worker, then the worker's input pipeline, then its ProgressHook, then TensorFlow's "
    "logger at INFO into a job-log handler; steps 300-2000 of each run), gave median "
    "steps/s ratios to the direct case of 1.12, 1.01, 1.07 and 0.96 (all four together), "
    "with the training thread's CPU per step 0.67-0.75 ms against 0.72 ms for the "
    "direct case: no piece adds measurable work to TensorFlow's loop, and single runs of "
    "the direct case alone spread from 520 to 794 steps/s in that experiment. The rest of "
    "(c) is the same TensorFlow in another process: a Celery pool process whose "
    "heartbeat writes the store every 5 s, beside the API, the Celery main process and "
    "Redis, which answer the bench's polling (their CPU per run is below)."
)


def _throughput(r: dict[str, Any]) -> list[str]:
    if "e2e" not in r:
        return []
    e = r["e2e"]
    a = [x["steps_per_sec"] for x in e["runs"]["a"]]
    c = [x["steps_per_sec"] for x in e["runs"]["c"]]
    paired = [y / x for x, y in zip(a, c, strict=True)]
    lines = [
        "### 2. Training throughput",
        "",
        f"`global_step/sec` medians per run: direct (a) {_list(a)} (spread {_spread(a)}); "
        f"worker (c) {_list(c)} (spread {_spread(c)}); (c)/(a) paired by round "
        f"{', '.join(f'{x:.2f}' for x in paired)} (median "
        f"{statistics.median(paired):.2f}). Both series are the Estimator's own TensorBoard "
        "summaries (the worker's served by GET /jobs/{id}/metrics, the direct runs' read "
        "from their model_dir by the same parser, `k2e.formats.tfevents`), so they count "
        "TensorFlow's steps the same way.",
        "",
    ]
    hook = e.get("hook_probe")
    if hook:
        lines += [
            "What k2e adds inside training is its ProgressHook (`worker/hooks.py`), a "
            "job-log handler and a heartbeat thread. The hook alone, measured away from the "
            "worker (the warm helper, training only, alternating without/with it): "
            f"{_list(hook['rates']['plain'])} steps/s without, "
            f"{_list(hook['rates']['k2e_hook'])} with; ratio of the medians "
            f"{hook['ratio']:.2f}. The other differences in (c): the job-log handler, the "
            "heartbeat (a store write every 5 s), the worker being a Celery pool process, "
            f"and the bench polling GET /jobs/{{id}} (every {POLL_TRAINING_S} s while the "
            "job trains: in a separate experiment, polling every 0.1 s throughout cost the "
            "worker ~15% of its steps/s on this 2-core machine).",
            "",
        ]
    cpu = e.get("cpu_s")
    if cpu:
        ca, cc = cpu["a"], cpu["c"]
        same = abs(cc["train_thread_cpu_s"] / ca["train_thread_cpu_s"] - 1) < 0.05
        lines += [
            "CPU time per run (medians; (a) the helper process, (c) the worker's pool "
            f"process, each for one whole run): (a) {ca['cpu_s']:.2f} s, of which "
            f"{ca['train_thread_cpu_s']:.2f} s in the training thread; (c) "
            f"{cc['cpu_s']:.2f} s, of which {cc['train_thread_cpu_s']:.2f} s in the training "
            "thread."
            + (
                " The training thread does the same CPU work in both: k2e adds no work to "
                "TensorFlow's loop; a lower steps/s in (c) is time its process waited or was "
                "not scheduled (on 2 cores shared with the API, Redis, the bench client and "
                "other tenants), not k2e code running."
                if same
                else ""
            ),
            "",
        ]
    others = e.get("others_cpu_s")
    if others:
        lines += [
            "CPU of the stack's other processes during each run (medians, CPU seconds: "
            "API / Celery main process / Redis): during (a) "
            + " / ".join(f"{v:.2f}" for v in others["a"].values())
            + ", during (c) "
            + " / ".join(f"{v:.2f}" for v in others["c"].values())
            + (f"; the training process used {cpu['a']['cpu_s']:.2f} s in (a)." if cpu else "."),
            "",
        ]
    ratio = e["throughput_ratio"]
    spread = _half_spread(a)
    if ratio < 0.97 and (1 - ratio) * 100 >= spread:
        lines += [
            f"This run misses by {(1 - ratio) * 100:.0f}% while runs of the direct case "
            f"spread ±{spread:.0f}%: a gap, not only noise. " + IN_PROCESS,
            "",
        ]
    if ratio < 0.97 and (1 - ratio) * 100 < spread:
        lines += [
            f"This run misses by {(1 - ratio) * 100:.0f}%, less than the ±{spread:.0f}% "
            "between runs of the direct case alone"
            + (
                f", and k2e's hook measured alone costs nothing measurable ({hook['ratio']:.2f})"
                if hook and hook["ratio"] >= 0.97
                else ""
            )
            + ": on this machine the miss cannot be told from noise. "
            + IN_PROCESS,
            "",
        ]
    return lines


def _half_spread(values: list[float]) -> float:
    """Half the range, as a percentage of the median."""
    return (max(values) - min(values)) / 2 / statistics.median(values) * 100


def _spread(values: list[float], unit: str = "", digits: int = 0) -> str:
    low, high = min(values), max(values)
    suffix = f" {unit}" if unit else ""
    return f"{low:.{digits}f}-{high:.{digits}f}{suffix}, ±{_half_spread(values):.0f}%"


API_VARIANTS = {
    "/healthz": "k2e `/healthz`, as served",
    "/probe/healthz": "an empty `async def` route (the framework's floor)",
    "/jobs/{id}": "k2e `/jobs/{id}`, as served",
    "/probe/jobs-sync/{id}": "all sync `def` (4 thread-pool trips)",
    "/probe/jobs-async-deps/{id}": "`async def` dependencies, sync endpoint (2 trips)",
    "/probe/jobs-async/{id}": "all `async def`, `JobStore.get` inline (0 trips)",
    "/probe/jobs-cached/{id}": "`async def`, a finished job's JSON cached in-process",
}


def _http_stack(r: dict[str, Any]) -> str:
    v = r["machine"]["versions"]
    fast = v.get("httptools", "not installed") != "not installed"
    loop = "uvloop" if v.get("uvloop", "not installed") != "not installed" else "asyncio"
    return f"{'httptools' if fast else 'h11 (pure Python)'}, {loop}"


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
        "The API runs as `make run` and the Dockerfile start it: one uvicorn process "
        f"({_http_stack(r)}, no access log), every request with an API key. It used "
        f"{jobs['server_cores']:.2f} cores during the /jobs/{{id}} phases and "
        f"{health['server_cores']:.2f} during /healthz. One process is bound to one core by "
        "the GIL, so req/s is the inverse of its CPU time per request"
        + (
            "."
            if min(jobs["server_cores"], health["server_cores"]) >= 0.9
            else " when it gets that core; here it did not always (other tenants of the "
            "shared machine)."
        )
        + " The load generator "
        "(Python asyncio, raw HTTP/1.1 keep-alive, its own process) used "
        f"{jobs['generator_cores']:.2f} / {health['generator_cores']:.2f} cores of the 2 it "
        "shares with the server.",
        "",
        "Variants of the same routes (`bench/probe_app.py`: a second uvicorn process on the "
        "same store, the same load, phases alternating; measured after everything else):",
        "",
        "| route | req/s | p50 | p99 | server cores |",
        "| --- | --- | --- | --- | --- |",
    ]
    for path, label in API_VARIANTS.items():
        x = v[path]
        lat = x["latency_ms"]
        lines.append(
            f"| {label} | {x['rps']:.0f} | {lat['p50']:.1f} ms | {lat['p99']:.1f} ms | "
            f"{x['server_cores']:.2f} |"
        )
    floor = v["/probe/healthz"]["rps"]
    mine = v["/jobs/{id}"]["rps"]
    cached = v["/probe/jobs-cached/{id}"]["rps"]
    if floor < 1500:
        reach = (
            "so 1500 req/s for a route that also reads the store is out of reach for one "
            "process on this machine, whatever the route does."
        )
    else:
        reach = (
            f"which leaves {1e6 / 1500 - 1e6 / floor:.0f} µs per request for the route "
            "itself at 1500 req/s."
        )
    us_floor, us_mine = 1e6 / floor, 1e6 / mine
    lines += [
        "",
        f"Per request, on the server's one core: the framework (FastAPI + Starlette + "
        f"uvicorn, an empty `async def` route) takes {us_floor:.0f} µs ({floor:.0f} req/s), "
        f"{reach} k2e's GET /jobs/{{id}} took {us_mine:.0f} µs ({mine:.0f} req/s in the "
        "probe process). Once the caller's key (service/auth.py's key cache, bounded by "
        "`K2E_KEY_CACHE_S`, the revocation delay) and the job's JSON (service/jobcache.py) "
        "are both in memory, `service/fastpath.py` answers the request before the "
        "framework: two dictionary reads and the bytes, the same status, body and headers "
        "as the route, which is why it can run faster than /healthz (which goes through "
        "FastAPI). The bench's load asks for one job with one key, so after the first "
        "request every one takes that path; a load spread over many jobs pays one store "
        f"read per job per `K2E_JOB_CACHE_S` (`JobStore.get`: "
        f"{store['jobstore_get_us']:.0f} µs per call in the bench process, the bare row "
        f"from the `sqlite3` module {store['sqlite3_row_us']:.0f} µs). The variants "
        f"(sync, async deps, a cached JSON at {cached:.0f} req/s) show what the route's "
        "declaration costs inside the framework. Measurement 4 found "
        f"{jobs['rps']:.0f} req/s for the route that the probe process served at "
        f"{mine:.0f} (load average {r['loadavg'].get('api', 0):.2f} and "
        f"{r['loadavg'].get('probes', 0):.2f} when the two parts started): on this shared "
        "machine, how busy the second core is moves these figures.",
        "",
    ]
    return lines


def _memory(r: dict[str, Any]) -> list[str]:
    if "memory" not in r:
        return []
    d = r["memory"]["download"]
    z = d["zlib_mb_s"]
    ratio = d["archive_bytes"] / r["memory"]["size_bytes"]
    lines = [
        "### 5. Download throughput",
        "",
        f"GET /jobs/{{id}}/checkpoints/{{step}} streamed the "
        f"{r['memory']['size_bytes'] / MB:.0f} MB checkpoint at "
        f"{d['mb_s']:.0f} MB/s (archive / payload = {ratio:.3f}); reading the same file "
        f"from the page cache runs at {d['disk_mb_s']:.0f} MB/s. zlib on the first 64 MB of "
        f"the same bytes, in this run: level 6 {z['6']:.0f} MB/s, level 1 {z['1']:.0f} MB/s, "
        f"level 0 (stored blocks, still valid gzip) {z['0']:.0f} MB/s. Checkpoint weights "
        "are float32 and barely compress.",
        "",
    ]
    if ratio < 0.99:
        lines += [
            "The archive is deflate-compressed on the fly (`service/archive.py`), so the "
            "download runs at the speed of deflate on one core. This is k2e's choice, not "
            "TensorFlow's. Fix: stored (level 0) gzip for checkpoints and SavedModels, "
            "which keeps `application/gzip` and the contract's tar.gz.",
            "",
        ]
    else:
        lines += [
            "The archive is stored (level 0) gzip, so compression is no longer the limit; "
            "what remains is streaming through one Python process (1 MB reads, the CRC, "
            "the ASGI server's writes). Even the level-0 compressor alone runs at "
            f"{z['0'] / d['disk_mb_s']:.2f} of a page-cache read here: 0.5 x a page-cache "
            "read is out of reach for a Python HTTP stream on this machine; against a read "
            "from a real disk it would not be. The plain tar (`?format=tar`, 5b below) "
            "skips the compressor and its CRC.",
            "",
        ]
    return [*lines, "Memory stays flat during both transfers: both stream in 1 MB chunks.", ""]


def _downloads(r: dict[str, Any]) -> list[str]:
    if "downloads" not in r:
        return []
    d = r["downloads"]
    c = d["concurrent"]
    tar, sendfile = d["median_mb_s"]["tar"], d["median_mb_s"]["sendfile"]
    share = c["aggregate_mb_s"] / c["sendfile"]["aggregate_mb_s"] if "sendfile" in c else 0.0
    return [
        "### 5b. Plain-tar downloads",
        "",
        f"GET /jobs/{{id}}/checkpoints/{{step}}?format=tar of the {d['size_bytes'] / MB:.0f} MB "
        f"checkpoint: {_list(d['mb_s']['tar'])} MB/s; `os.sendfile` of the same file over "
        f"loopback, alternating with it: {_list(d['mb_s']['sendfile'])} MB/s (medians "
        f"{tar:.0f} and {sendfile:.0f}). Both read by the same raw-socket client. The tar "
        "has a Content-Length and no compressor: each member's header, then its file in "
        "1 MB reads on a reader thread (never on the event loop), each handed to "
        "uvicorn's transport. uvicorn 0.54 offers neither the ASGI `http.response.pathsend` "
        "nor the zerocopy extension, and uvloop has no `loop.sendfile`, so no zero-copy "
        "path exists in this server stack: the gap to sendfile is the copies from the "
        "page cache into Python and from Python into the socket, on one core. "
        f"{c['downloads']} downloads at once: {c['aggregate_mb_s']:.0f} MB/s in all, the "
        f"API's RSS grew {c['growth'] / MB:.1f} MB (each response holds about two 1 MB "
        "reads: the one being written and the next)."
        + (
            f" The same {c['downloads']} downloads at once from the `os.sendfile` server (a "
            f"thread per connection), right after: {c['sendfile']['aggregate_mb_s']:.0f} MB/s "
            f"in all, so the API reached {share:.2f} of what this machine's kernel does with "
            "zero copies. Cores used during the API's 8 downloads: the API "
            f"{c.get('server_cores') or 0:.2f}, the client thread "
            f"{c.get('client_cores') or 0:.2f} (it reads every byte), of the machine's 2. "
            "Each byte the API sends is copied twice under Python (a file read into a bytes "
            "object on a reader thread, then the event loop's socket write), against one "
            "in-kernel copy for sendfile; with the client on the other core, that is where "
            "the concurrent figure stops."
            if "sendfile" in c
            else ""
        ),
        "",
    ]


def _fairness(r: dict[str, Any]) -> list[str]:
    if "fairness" not in r:
        return []
    f = r["fairness"]
    burst_s = f["burst_job_s_p50"]
    took = f" (a burst job ran {burst_s:.2f} s, median)" if burst_s else ""
    return [
        "### 7. Submit → running behind another tenant's burst",
        "",
        f"Tenant `burst` queued {f['burst_jobs']} one-step jobs through POST /convert; then "
        f"the admin's tenant submitted {f['samples']} one-step jobs, one at a time. The "
        f"rule (k2e/jobs/dispatch.py) keeps at most K = {f['inflight_limit']} of a "
        "tenant's jobs in the broker or running, so a new job of another tenant waits for "
        f"at most K of the burst's. Burst jobs that started between each job's "
        f"`created_at` and its `started_at`: {f['burst_started_ahead']}; burst jobs still "
        f"waiting at each: {f['burst_waiting_at_each']}; `started_at - created_at`: "
        f"{_list(f['raw_wait_ms'])} ms{took}.",
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
        "pickup | worker | worker: until the Estimator | lag | steps/s (a) | steps/s (c) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a, b, c in zip(e["runs"]["a"], e["runs"]["b"], e["runs"]["c"], strict=True):
        lines.append(
            f"| {a['round']} | {a['wall_s']:.2f} s | {b['wall_s']:.2f} s | {c['wall_s']:.2f} s "
            f"| {c['post_s']:.2f} s | {c['pickup_s']:.3f} s | {c['worker_s']:.2f} s "
            f"| {_seconds(c.get('prefix_s'))} | {c['lag_s']:.2f} s | {a['steps_per_sec']:.0f} "
            f"| {c['steps_per_sec']:.0f} |"
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
        ("post_convert_ms", "POST /convert answered"),
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


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)
