"""The measurements of bench/storage.py: 1 GB through the API against boto3 on the same
bucket, the worker's input cache, and eight downloads at once on the local folder."""

import os
import re
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
from boto3.s3.transfer import TransferConfig

from bench import client as rest
from bench.downloads import MB, SendfileServer, concurrent, fetch
from bench.e2e import _log_time
from bench.harness import ADMIN_KEY, AUTH_HEADER, Stack, read_cpu_seconds
from bench.memory import checkpoint_job
from bench.workload import convert_spec, seed_multi_io_data, write_npz
from k2e.blobkeys import CHUNK
from k2e.blobstore_s3 import DEFAULT_PART_BYTES, S3BlobStore
from service.archive import TAR_CHUNK
from tests.support.s3_server import CREDENTIALS, S3Server

# k2e.blobstore_s3's own transfer settings: boto3 direct does what the API's store does.
TRANSFER = TransferConfig(
    multipart_threshold=DEFAULT_PART_BYTES,
    multipart_chunksize=DEFAULT_PART_BYTES,
    max_concurrency=8,
    io_chunksize=CHUNK,
)


def s3_client(server: S3Server) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION"],
    )


def random_file(path: Path, size: int) -> Path:
    """``size`` bytes of float32 noise as one array in an .npz (a valid dataset upload)."""
    rng = np.random.default_rng(3)
    np.savez(path, x=rng.standard_normal(size // 4, dtype=np.float32))
    return path


def bucket_checkpoint_job(stack: Stack, s3: Any, server: S3Server, prefix: str, size: int) -> str:
    """A finished job record (bench/memory.py's ``checkpoint_job``) whose checkpoint is put
    into the bucket at the job's model_dir keys, as a worker publishes one (data first,
    .index last); the local copy is removed, so the API can only serve the bucket's."""
    job_id, data = checkpoint_job(stack, size)
    base = stack.settings.storage_root.resolve()
    for path in (data, data.with_name("model.ckpt-1.index")):
        key = f"{prefix}/{path.resolve().relative_to(base).as_posix()}"
        s3.upload_file(str(path), server.bucket, key, Config=TRANSFER)
        path.unlink()
    return job_id


def _store_get(server: S3Server, key: str) -> tuple[int, float]:
    """The API's own read path without the API: k2e.blobstore_s3's ``open`` read in the
    download's chunk size (service/archive.py's TAR_CHUNK), in this thread."""
    for name, value in CREDENTIALS.items():  # boto3's credential chain, as the API's
        os.environ.setdefault(name, value)
    store = S3BlobStore(server.bucket, endpoint_url=server.endpoint)
    started = time.perf_counter()
    received = 0
    with store.open(key) as body:
        while data := body.read(TAR_CHUNK):
            received += len(data)
    return received, time.perf_counter() - started


def _boto_get(s3: Any, bucket: str, key: str) -> tuple[int, float]:
    """get_object streamed in 1 MB chunks and discarded (what the API's download does)."""
    started = time.perf_counter()
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    received = 0
    for chunk in body.iter_chunks(MB):
        received += len(chunk)
    return received, time.perf_counter() - started


def transfers(
    stack: Stack,
    local: Stack,
    server: S3Server,
    prefix: str,
    size: int,
    rounds: int,
    workdir: Path,
) -> dict[str, Any]:
    """Bucket storage, alternating within each round: GET /jobs/{id}/checkpoints/1?format=tar
    ("api") against boto3's get_object of the same object ("boto"); POST /datasets of a
    ``size`` npz against boto3's upload_file of the same file (k2e's part size and
    concurrency). Beside them, for attribution, the same download and upload through the
    API on the local folder ("local"), and the CPU each API process used meanwhile."""
    s3 = s3_client(server)
    job_id = bucket_checkpoint_job(stack, s3, server, prefix, size)
    local_job, local_data = checkpoint_job(local, size)
    listing = s3.list_objects_v2(Bucket=server.bucket, Prefix=f"{prefix}/")["Contents"]
    key = next(o["Key"] for o in listing if job_id in o["Key"] and ".data-" in o["Key"])
    upload = random_file(workdir / "upload.npz", size)
    payload = upload.stat().st_size
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    apis = {"api": stack, "local": local}
    https = {n: httpx.Client(base_url=s.url, headers=auth, timeout=600) for n, s in apis.items()}
    paths = {
        n: f"/jobs/{j}/checkpoints/1?format=tar" for n, j in (("api", job_id), ("local", local_job))
    }
    out: dict[str, list[float]] = {
        f"{c}_{op}": [] for c in ("api", "boto", "local", "store") for op in ("get", "put")
    }
    cores: dict[str, list[float]] = {f"{c}_{op}": [] for c in apis for op in ("get", "put")}
    cases = ["api", "boto", "local"]
    try:
        for i in range(rounds):
            order = cases[i % 3 :] + cases[: i % 3]
            for op in ("get", "put"):
                # "store": the bucket read path the API uses, alone (downloads only).
                for case in order + (["store"] if op == "get" else []):
                    pid = apis[case].api.pid if case in apis else None  # type: ignore[union-attr]
                    cpu = read_cpu_seconds(pid) if pid else 0.0
                    started = time.perf_counter()
                    if op == "get" and case == "boto":
                        received, _ = _boto_get(s3, server.bucket, key)
                    elif op == "get" and case == "store":
                        received, _ = _store_get(server, key)
                    elif op == "get":
                        received, _ = fetch(apis[case].port, paths[case], (AUTH_HEADER,))
                    elif case == "boto":
                        s3.upload_file(
                            str(upload), server.bucket, f"{prefix}/bench/put", Config=TRANSFER
                        )
                        received = payload
                    else:
                        dataset = rest.upload(https[case], "/datasets", upload)
                        received = payload
                    seconds = time.perf_counter() - started
                    if pid:
                        cores[f"{case}_{op}"].append((read_cpu_seconds(pid) - cpu) / seconds)
                    expected = size if op == "get" else payload
                    if received < expected:
                        raise RuntimeError(f"{case} {op}: {received} of {expected} bytes")
                    out[f"{case}_{op}"].append(expected / MB / seconds)
                    print(f"  {op} {case}: {expected / MB / seconds:.0f} MB/s", flush=True)
                    if op == "put" and case == "boto":
                        s3.delete_object(Bucket=server.bucket, Key=f"{prefix}/bench/put")
                    elif op == "put":
                        https[case].delete(f"/datasets/{dataset['id']}")
    finally:
        for http in https.values():
            http.close()
        upload.unlink()
        local_data.unlink()
    medians = {k: statistics.median(v) for k, v in out.items() if v}
    return {
        "size_bytes": size,
        "upload_bytes": payload,
        "mb_s": out,
        "median_mb_s": medians,
        "api_cores": cores,
        "get_ratio": medians["api_get"] / medians["boto_get"],
        "put_ratio": medians["api_put"] / medians["boto_put"],
    }


_FIRST_STEP = re.compile(r"loss = [^,]+, step = \d+")


def first_step_s(worker_log: Path, job_id: str) -> dict[str, Any]:
    """From the worker's "job <id>: attempt" line (it took the job) to TensorFlow's first
    "loss = ..., step = ..." line after it, and each log line in between (the cache's fetch)."""
    started: datetime | None = None
    marks: dict[str, Any] = {"first_step_s": None}
    lines: list[str] = []
    marks["lines"] = lines  # every worker log line until the first step, seconds in
    for line in worker_log.read_text(errors="replace").splitlines():
        stamp = _log_time(line)
        if started is None:
            if f"job {job_id}: attempt" in line:
                started = stamp
            continue
        if stamp is None:
            continue
        since = (stamp - started).total_seconds()
        lines.append(f"{since:.3f} {line.split(': ', 2)[-1][:100]}")
        if _FIRST_STEP.search(line):
            marks["first_step_s"] = since
            return marks
    return marks


def cache(stack: Stack, model_id: str, rounds: int, mib: int, workdir: Path) -> dict[str, Any]:
    """Per round a fresh ``mib`` MB dataset (the seed's arrays, more examples) uploaded,
    then two short jobs on it one after the other: the first fetches it from the bucket
    into the worker's cache, the second finds it there (sha256 checked)."""
    per_example = sum(v.nbytes for v in seed_multi_io_data(1).values())
    examples = mib * MB // per_example
    http = httpx.Client(
        base_url=stack.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=600
    )
    runs = []
    try:
        for i in range(rounds):
            npz = write_npz(workdir / f"cache-{i}.npz", seed_multi_io_data(examples, seed=10 + i))
            dataset = rest.upload(http, "/datasets", npz)
            npz.unlink()
            spec = convert_spec(model_id, dataset["id"], 100, evaluate=False, export=False)
            pair = {}
            for which in ("first", "second"):
                job = rest.submit(http, spec)
                rest.require_success(rest.wait_until(http, job["id"], interval=0.2)[0])
                marks = first_step_s(stack.logs / "worker.log", job["id"])
                pair[which] = marks
                print(f"  cache round {i} {which}: {marks['first_step_s']} s", flush=True)
            runs.append(pair)
    finally:
        http.close()
    firsts = [r["first"]["first_step_s"] for r in runs]
    seconds = [r["second"]["first_step_s"] for r in runs]
    return {
        "dataset_bytes": examples * per_example,
        "runs": runs,
        "median_first_s": statistics.median(firsts),
        "median_second_s": statistics.median(seconds),
        "ratio": statistics.median(s / f for f, s in zip(firsts, seconds, strict=True)),
    }


def concurrent_local(stack: Stack, size: int, rounds: int = 2) -> dict[str, Any]:
    """Eight downloads at once of a ``size`` checkpoint (?format=tar) from the API on the
    local folder, against eight from the sendfile server, alternating."""
    assert stack.api is not None
    job_id, data = checkpoint_job(stack, size)
    payload = data.stat().st_size
    path = f"/jobs/{job_id}/checkpoints/1?format=tar"
    server = SendfileServer(data)
    runs: dict[str, list[dict[str, Any]]] = {"api": [], "sendfile": []}
    try:
        fetch(server.port, "/")  # the page cache warm for both
        for i in range(rounds):
            for case in ["api", "sendfile"] if i % 2 == 0 else ["sendfile", "api"]:
                if case == "api":
                    result = concurrent(stack.port, path, payload, stack.api.pid, (AUTH_HEADER,))
                else:
                    result = concurrent(server.port, "/", payload, None)
                runs[case].append(result)
                print(f"  8 at once {case}: {result['aggregate_mb_s']:.0f} MB/s", flush=True)
    finally:
        server.close()
        os.unlink(data)
    medians = {c: statistics.median(r["aggregate_mb_s"] for r in rs) for c, rs in runs.items()}
    return {
        "size_bytes": payload,
        "runs": runs,
        "median_mb_s": medians,
        "ratio": medians["api"] / medians["sendfile"],
    }
