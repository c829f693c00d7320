"""Hostile datasets: files that lie about their sizes are refused with a 422 naming the
limit, in time proportional to what was read, and the API's memory stays flat (the
inspection runs in the sandbox's child, with the bounded readers of k2e/formats).

The corpus is POSTed to a real API process (uvicorn, as ``make run`` starts it) whose RSS
is read from /proc; run with ``-s`` to see the figures per file kind.
"""

import gzip
import io
import json
import os
import subprocess
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from k2e.errors import InvalidUpload
from k2e.formats.csvdata import inspect_csv
from k2e.formats.examples import inspect_tfrecord
from k2e.formats.npz import inspect_npz, load_npz_arrays
from k2e.formats.read_limits import ReadLimits
from k2e.launcher.embedded_redis import EmbeddedRedis
from tests.support.api_keys import ADMIN, TEST_ADMIN_KEY
from tests.support.api_server import running_api
from tests.support.dataset_bytes import example, record, valid_csv, valid_npz, valid_tfrecord
from tests.support.fuzz_inputs import assert_problem, mutated_bytes

ROOT = Path(__file__).resolve().parents[2]
RSS_BUDGET_MB = 50.0
ANSWER_BOUND_S = 30.0


# --- building files ------------------------------------------------------------------------------


def lying_tfrecord(declared: int, padding: int = 1024, random: bool = False) -> bytes:
    """A record header declaring ``declared`` bytes, followed by far fewer."""
    filler = os.urandom(padding) if random else b"\0" * padding
    return record(filler, declared)[: 12 + padding]


def gzip_lying_tfrecord() -> bytes:
    """The attack that took the API to 2.1 GB: a ~2 MB gzip whose header declares 2 GB."""
    return gzip.compress(lying_tfrecord(2 * 1024**3, padding=2 * 1024**2, random=True), 1)


def gzip_bomb() -> bytes:
    """Valid 1 MiB records, one gzip member each, repeated: ~2 MB inflating to 2 GiB."""
    member = gzip.compress(record(example({"x": b"\0" * (1024**2)})), 9)
    return member * 2048


def npz_bomb(inflated: int = 512 * 1024**2) -> bytes:
    """One member of zeros declared honestly: ``inflated`` bytes out of ~1/1000 of that."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header,
                {"descr": "<f8", "fortran_order": False, "shape": (inflated // 8,)},
            )
            member.write(header.getvalue())
            zeros = b"\0" * (16 * 1024**2)
            for _ in range(inflated // len(zeros)):
                member.write(zeros)
    return buffer.getvalue()


def npz_lying_header() -> bytes:
    """A stored member whose .npy header declares 8 GB but holds 16 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)}
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + b"\0" * 16)
    return buffer.getvalue()


def wide_csv(columns: int) -> bytes:
    header = ",".join(f"c{i}" for i in range(columns))
    return (header + "\n" + ",".join("1" for _ in range(columns)) + "\n").encode()


def huge_suffix_csv() -> bytes:
    return f"x_{'9' * 5000},y\n1,2\n3,4\n".encode()


def huge_field_csv() -> bytes:
    return b"x,y\n" + b"1" * (2 * 1024**2) + b",2\n"


# (case id, kind, file name, builder, expected status, text the problem's detail holds)
CORPUS: list[tuple[str, str, str, Callable[[], bytes], int, str]] = [
    ("length-1TB", "tfrecord", "d.tfrecord", lambda: lying_tfrecord(1 << 40), 422,
     "K2E_MAX_RECORD_BYTES"),
    ("length-near-2^64", "tfrecord", "d.tfrecord", lambda: lying_tfrecord(2**64 - 5), 422,
     "K2E_MAX_RECORD_BYTES"),
    ("length-past-file", "tfrecord", "d.tfrecord", lambda: lying_tfrecord(32 * 1024**2), 422,
     "can hold at most"),
    ("gzip-length-2GB", "tfrecord.gz", "d.tfrecord.gz", gzip_lying_tfrecord, 422,
     "K2E_MAX_RECORD_BYTES"),
    ("gzip-length-near-2^64", "tfrecord.gz", "d.tfrecord.gz",
     lambda: gzip.compress(lying_tfrecord(2**64 - 1)), 422, "K2E_MAX_RECORD_BYTES"),
    ("gzip-length-past-ratio", "tfrecord.gz", "d.tfrecord.gz",
     lambda: gzip.compress(lying_tfrecord(48 * 1024**2)), 422, "K2E_MAX_INFLATION_RATIO"),
    ("gzip-bomb", "tfrecord.gz", "d.tfrecord.gz", gzip_bomb, 422, "K2E_MAX_INFLATION_RATIO"),
    ("npz-bomb", "npz", "d.npz", npz_bomb, 422, "K2E_MAX_INFLATION_RATIO"),
    ("npz-lying-header", "npz", "d.npz", npz_lying_header, 422, "declares 8000000000 bytes"),
    ("csv-1M-columns", "csv", "d.csv", lambda: wide_csv(1_000_000), 422, "K2E_MAX_CSV_COLUMNS"),
    ("csv-20k-columns", "csv", "d.csv", lambda: wide_csv(20_000), 422, "K2E_MAX_CSV_COLUMNS"),
    ("csv-huge-field", "csv", "d.csv", huge_field_csv, 422, "K2E_MAX_CSV_FIELD_BYTES"),
    ("csv-huge-suffix", "csv", "d.csv", huge_suffix_csv, 201, ""),
]  # fmt: skip


# --- the readers, in this process ----------------------------------------------------------------


@pytest.mark.parametrize(
    "case", [c for c in CORPUS if c[0] not in ("gzip-bomb", "npz-bomb")], ids=lambda c: c[0]
)
def test_the_readers_refuse_each_file_naming_the_limit(case, tmp_path: Path) -> None:
    _, kind, name, build, status, text = case
    path = tmp_path / name
    path.write_bytes(build())
    reader = {"tfrecord": inspect_tfrecord, "tfrecord.gz": inspect_tfrecord}.get(
        kind, inspect_npz if kind == "npz" else inspect_csv
    )
    if status == 201:
        reader(path, ReadLimits())
        return
    with pytest.raises(InvalidUpload, match=text):
        reader(path, ReadLimits())


def test_the_worker_loader_refuses_an_npz_bomb_before_loading(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    path.write_bytes(npz_bomb(64 * 1024**2))
    with pytest.raises(InvalidUpload, match="K2E_MAX_INFLATION_RATIO"):
        load_npz_arrays(path, ReadLimits())
    path.write_bytes(npz_lying_header())
    with pytest.raises(InvalidUpload, match="declares"):
        load_npz_arrays(path, ReadLimits())


def test_valid_files_pass_the_bounded_readers(tmp_path: Path) -> None:
    (tmp_path / "d.tfrecord").write_bytes(valid_tfrecord(1200))
    (tmp_path / "d.tfrecord.gz").write_bytes(gzip.compress(valid_tfrecord(5)))
    (tmp_path / "d.npz").write_bytes(valid_npz())
    (tmp_path / "d.csv").write_bytes(valid_csv())
    assert inspect_tfrecord(tmp_path / "d.tfrecord").arrays == {"x": [1200, 3], "y": [1200, 1]}
    gz = inspect_tfrecord(tmp_path / "d.tfrecord.gz")
    assert gz.compressed
    assert gz.num_examples == 5
    assert inspect_npz(tmp_path / "d.npz").arrays == {"x": [8, 3], "y": [8]}
    assert load_npz_arrays(tmp_path / "d.npz")["x"].shape == (8, 3)
    assert inspect_csv(tmp_path / "d.csv").arrays == {"x": [8, 2], "y": [8]}


# --- a real API process --------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    root = tmp_path_factory.mktemp("hostile-api")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "K2E_DATABASE_URL")}
    env.update(
        K2E_DATA_DIR=str(root / "data"),
        REDIS_URL=redis_server.url,
        K2E_ADMIN_KEY=TEST_ADMIN_KEY,
        PYTHONUNBUFFERED="1",
    )
    with running_api(env, root / "api.log") as running:
        yield running


def _post(base: str, name: str, content: bytes) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(
        f"{base}/datasets", files={"file": (name, content)}, headers=ADMIN, timeout=120
    )
    return response, time.monotonic() - started


def test_hostile_corpus_against_a_real_api_process(api) -> None:
    base, process = api
    # Warm up: one valid file of each kind, so that what the API imports once is counted
    # before the baseline.
    for name, content in (
        ("w.npz", valid_npz()),
        ("w.csv", valid_csv()),
        ("w.tfrecord", valid_tfrecord()),
        ("w.tfrecord.gz", gzip.compress(valid_tfrecord())),
    ):
        response, _ = _post(base, name, content)
        assert response.status_code == 201, response.text
    baseline = _rss_mb(process.pid)
    worst: dict[str, tuple[float, float, str]] = {}  # kind -> (rss growth, seconds, case)
    for case, kind, name, build, status, text in CORPUS:
        content = build()
        response, seconds = _post(base, name, content)
        growth = _rss_mb(process.pid) - baseline
        print(
            f"\n{case:24} {kind:12} {len(content) / 2**20:7.2f} MB  -> {response.status_code} "
            f"in {seconds:5.2f} s, API RSS +{growth:5.1f} MB"
        )
        assert process.poll() is None, f"the API died on {case}"
        assert response.status_code == status, (case, response.text)
        if status >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")
            assert text in response.json()["detail"], (case, response.json()["detail"])
        assert seconds < ANSWER_BOUND_S, (case, seconds)
        previous = worst.get(kind)
        if previous is None or (growth, seconds) > previous[:2]:
            worst[kind] = (growth, seconds, case)
    total = _rss_mb(process.pid) - baseline
    print(f"\nAPI RSS: {baseline:.1f} MB after warm-up, +{total:.1f} MB after the corpus")
    for kind, (growth, seconds, case) in sorted(worst.items()):
        print(f"worst {kind:12}: +{growth:5.1f} MB, {seconds:5.2f} s ({case})")
    assert total <= RSS_BUDGET_MB, f"the API grew by {total:.1f} MB"
    assert httpx.get(f"{base}/healthz").status_code == 200


# The request side of the same real process: bodies and specs, not files.
_PATH_VOCABULARY_MODEL = {
    "class_name": "Functional",
    "config": {
        "name": "m",
        "layers": [
            {
                "class_name": "InputLayer",
                "config": {"batch_input_shape": [None, 1], "dtype": "string", "name": "s"},
                "name": "s",
                "inbound_nodes": [],
            },
            {
                "class_name": "StringLookup",
                "config": {"name": "lookup", "vocabulary": "/etc/passwd"},
                "name": "lookup",
                "inbound_nodes": [[["s", 0, 0, {}]]],
            },
        ],
        "input_layers": [["s", 0, 0]],
        "output_layers": [["lookup", 0, 0]],
    },
}


def _spec(**extra: object) -> dict:
    spec: dict = {"keras_model_path": "a" * 32, "train": {"dataset": "b" * 32, "max_steps": 5}}
    spec.update(extra)
    return spec


REQUESTS = [
    # (case, content type, body, expected status, text the detail names)
    ("deep-json", "application/json", b"[" * 200_000 + b"]" * 200_000, 422, "deep"),
    (
        "huge-json-body",
        "application/json",
        b'{"x": "' + b"a" * (6 * 2**20) + b'"}',
        413,
        "K2E_MAX_JSON_BYTES",
    ),
    (
        "huge-integer",
        "application/json",
        json.dumps(_spec(timeout_s=10**30)).encode(),
        422,
        "outside int64",
    ),
    (
        "path-vocabulary",
        "application/json",
        json.dumps(
            {
                "keras_model": {"config": _PATH_VOCABULARY_MODEL, "compile": {"loss": "mse"}},
                "train": {"dataset": "b" * 32, "max_steps": 5},
            }
        ).encode(),
        422,
        "vocabulary",
    ),
]


def test_hostile_requests_against_a_real_api_process(api) -> None:
    """Deep and oversized JSON, numbers past the store's columns, path-bearing configs and
    an oversized multipart body: each a 4xx naming the limit, quickly, memory flat."""
    base, process = api
    assert httpx.get(f"{base}/jobs", headers=ADMIN).status_code == 200  # warm
    baseline = _rss_mb(process.pid)
    cases = [(c, t, b, st_, text) for c, t, b, st_, text in REQUESTS]
    boundary = "k2e-boundary"
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n'.encode()
        for i in range(2000)
    )
    cases.append(
        (
            "many-multipart-parts",
            f"multipart/form-data; boundary={boundary}",
            parts + f"--{boundary}--\r\n".encode(),
            422,
            "K2E_MAX_MULTIPART_PARTS",
        )
    )
    for case, content_type, body, status, text in cases:
        started = time.monotonic()
        response = httpx.post(
            f"{base}/convert",
            content=body,
            headers={**ADMIN, "content-type": content_type},
            timeout=120,
        )
        seconds = time.monotonic() - started
        growth = _rss_mb(process.pid) - baseline
        print(
            f"\n{case:24} {len(body) / 2**20:7.2f} MB  -> {response.status_code} in "
            f"{seconds:5.2f} s, API RSS +{growth:5.1f} MB"
        )
        assert process.poll() is None, f"the API died on {case}"
        assert response.status_code == status, (case, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert text in response.json()["detail"], (case, response.json()["detail"])
        assert seconds < ANSWER_BOUND_S, (case, seconds)
    jobs = httpx.get(f"{base}/jobs", headers=ADMIN).json()["items"]
    assert jobs == [], "no refused request made a job"
    total = _rss_mb(process.pid) - baseline
    print(f"\nAPI RSS after the request corpus: +{total:.1f} MB")
    assert total <= RSS_BUDGET_MB, f"the API grew by {total:.1f} MB"


# --- fuzz: random and mutated files, in-process ---------------------------------------------------


VALID = {
    "d.npz": valid_npz(),
    "d.csv": valid_csv(),
    "d.tfrecord": valid_tfrecord(),
    "d.tfrecord.gz": gzip.compress(valid_tfrecord()),
}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(VALID)))
    return name, draw(mutated_bytes(VALID[name]))


@hypothesis_settings(
    max_examples=30,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(upload=mutated())
def test_fuzzed_datasets_never_answer_5xx(client: TestClient, upload) -> None:
    name, content = upload
    response = client.post("/datasets", files={"file": (name, content)})
    assert response.status_code < 500, (name, response.status_code, response.text)
    assert response.status_code in (201, 413, 422), response.text
    if response.status_code >= 400:
        assert_problem(response)
    assert client.get("/healthz").status_code == 200
