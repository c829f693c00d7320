"""Measurement 5: the API's memory, idle and while it moves ~1 GB each way.

RSS of the uvicorn process is sampled from /proc/<pid>/status (VmRSS) every 20 ms by a
thread of the bench process. Upload: POST /datasets with a ~1 GB ``.npz`` that the client
streams from disk (httpx reads the file object in chunks). Download: a job record is
inserted directly, a ~1 GB checkpoint (random float32 values, like real weights) is
written into its model_dir, and GET /jobs/{id}/checkpoints/1 is streamed and discarded.
The download's throughput (checkpoint bytes per second) is compared with reading the
same file from disk (page cache warm for both). ``zlib_mb_s`` shows what the archive's
gzip compression costs per level on a sample of the same bytes.
"""

import threading
import time
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.lib import format as npy_format

from bench.harness import Stack, read_rss_bytes
from k2e.jobs.job_store import NewJob
from k2e.jobs.leases import JobLeases
from k2e.schemas import JobStatus
from k2e.tenancy.bodies import DEFAULT_TENANT

MB = 1024 * 1024
CHUNK = 64 * MB
# One example of the seed workload: input_a, input_b (16 floats each), dense_2 (3), dense_3 (2).
ARRAYS = {"input_a": 16, "input_b": 16, "dense_2": 3, "dense_3": 2}


class RssSampler:
    """Peak RSS of a process while the ``with`` block runs."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, read_rss_bytes(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self.peak = read_rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, read_rss_bytes(self.pid))


def write_big_npz(path: Path, target_bytes: int) -> Path:
    """A valid ``.npz`` of about ``target_bytes`` (stored, not compressed), written in
    chunks: never more than CHUNK bytes in memory."""
    n = target_bytes // (4 * sum(ARRAYS.values()))
    rng = np.random.default_rng(1)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, width in ARRAYS.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                header = {"descr": "<f4", "fortran_order": False, "shape": (n, width)}
                npy_format.write_array_header_1_0(member, header)
                left = n * width
                while left:
                    count = min(left, CHUNK // 4)
                    member.write(rng.standard_normal(count, dtype=np.float32).tobytes())
                    left -= count
    return path


def write_big_checkpoint(model_dir: Path, target_bytes: int, step: int = 1) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    data = model_dir / f"model.ckpt-{step}.data-00000-of-00001"
    rng = np.random.default_rng(2)
    with data.open("wb") as f:
        left = target_bytes
        while left:
            count = min(left, CHUNK) // 4
            f.write(rng.standard_normal(count, dtype=np.float32).tobytes())
            left -= count * 4
    (model_dir / f"model.ckpt-{step}.index").write_bytes(b"\0" * 4096)
    return data


def checkpoint_job(stack: Stack, size: int) -> tuple[str, Path]:
    """A finished job record of the admin's tenant whose model_dir holds a ``size``-byte
    checkpoint at step 1; returns the job id and the checkpoint's data file. Finished, as
    a job with checkpoints is: a queued record would count against the tenant's in-flight
    jobs (K2E_TENANT_INFLIGHT_JOBS) until the reconciler failed it, and hold up the next
    parts' jobs (it showed as a ~55 s pickup p99 in the scaling part)."""
    job_id = str(uuid.uuid4())
    new = NewJob(job_id, DEFAULT_TENANT, {"note": "bench download"}, "cpu", f"jobs/{job_id}", 1)
    store = JobLeases(stack.settings.sqlalchemy_url)  # the worker's side: start, finish
    store.create(new)
    owner = f"bench-download:{job_id[:8]}"
    store.start(job_id, owner, lease_s=60)
    store.finish(job_id, JobStatus.succeeded, owner)
    store.engine.dispose()
    model_dir = stack.storage().for_tenant(DEFAULT_TENANT).job_model_dir(job_id)
    return job_id, write_big_checkpoint(model_dir, size)


def disk_read_seconds(path: Path) -> float:
    started = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        while f.read(MB):
            pass
    return time.perf_counter() - started


def zlib_mb_s(path: Path, levels: tuple[int, ...] = (0, 1, 6)) -> dict[str, float]:
    """Compression speed per level on the first 64 MB of ``path`` (the archive uses 6)."""
    with path.open("rb") as f:
        sample = f.read(CHUNK)
    speeds = {}
    for level in levels:
        gz = zlib.compressobj(level, zlib.DEFLATED, 31)
        started = time.perf_counter()
        for i in range(0, len(sample), MB):
            gz.compress(sample[i : i + MB])
        gz.flush()
        speeds[str(level)] = len(sample) / MB / (time.perf_counter() - started)
    return speeds


def idle_rss(http: httpx.Client, pid: int) -> int:
    """RSS after a few ordinary requests, once it has settled."""
    for _ in range(20):
        http.get("/healthz")
        http.get("/jobs", params={"limit": 5})
    time.sleep(1.0)
    return read_rss_bytes(pid)


def measure(stack: Stack, http: httpx.Client, workdir: Path, size: int) -> dict[str, Any]:
    assert stack.api is not None
    pid = stack.api.pid
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"size_bytes": size, "idle_rss": idle_rss(http, pid)}

    npz = write_big_npz(workdir / "big.npz", size)
    before = read_rss_bytes(pid)
    started = time.perf_counter()
    with RssSampler(pid) as sampler, npz.open("rb") as f:
        response = http.post("/datasets", files={"file": (npz.name, f)}, timeout=600)
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"upload: {response.status_code} {response.text[:300]}")
    result["upload"] = {
        "rss_before": before,
        "rss_peak": sampler.peak,
        "growth": sampler.peak - before,
        "seconds": elapsed,
        "mb_s": npz.stat().st_size / MB / elapsed,
    }
    npz.unlink()

    job_id, data = checkpoint_job(stack, size)
    disk_read_seconds(data)  # warm the page cache, as the download will find it
    disk_s = disk_read_seconds(data)
    payload = data.stat().st_size
    before = read_rss_bytes(pid)
    received = 0
    started = time.perf_counter()
    with (
        RssSampler(pid) as sampler,
        http.stream("GET", f"/jobs/{job_id}/checkpoints/1", timeout=600) as response,
    ):
        response.raise_for_status()
        for chunk in response.iter_raw(MB):
            received += len(chunk)
    elapsed = time.perf_counter() - started
    result["download"] = {
        "rss_before": before,
        "rss_peak": sampler.peak,
        "growth": sampler.peak - before,
        "seconds": elapsed,
        "archive_bytes": received,
        "mb_s": payload / MB / elapsed,
        "disk_mb_s": payload / MB / disk_s,
        "ratio_to_disk": disk_s / elapsed,
        "zlib_mb_s": zlib_mb_s(data),
    }
    data.unlink()
    return result
